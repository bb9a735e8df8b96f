//! One P8 fleet run against a broker that is already running — for looking inside its memory
//! (`heaptrack`, `/proc/PID/smaps_rollup`) while a fleet uses it.
//!
//!     bench-fleet HOST:PORT PID DEVICES QOS SECONDS [USERNAME PASSWORD]
//!
//! PID is the broker's (its resident memory is sampled); the devices connect anonymously unless
//! credentials are given. `{n}` in USERNAME or PASSWORD stands for the device's number (`backend`
//! for the backend): a fleet with one user per device.

use std::time::Duration;

use dynsec_bench::fleet::{self, FleetSpec};
use dynsec_bench::machine;

fn usage() -> ! {
    eprintln!("usage: bench-fleet HOST:PORT PID DEVICES QOS SECONDS [USERNAME PASSWORD]");
    std::process::exit(2)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() != 5 && args.len() != 7 {
        usage();
    }
    let addr = args[0].parse().unwrap_or_else(|_| usage());
    let number = |s: &str| s.parse::<u64>().unwrap_or_else(|_| usage());
    let (pid, devices, qos, seconds) = (number(&args[1]), number(&args[2]), number(&args[3]), number(&args[4]));
    let credentials = (args.len() == 7).then(|| (args[5].clone(), args[6].clone()));
    machine::raise_open_files(devices + 1000);
    let spec = FleetSpec {
        addr,
        devices: devices as usize,
        qos: qos as u8,
        period: Duration::from_secs(10),
        duration: Duration::from_secs(seconds),
        credentials,
        prefix: format!("x{}", std::process::id()),
    };
    let rss = || {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
    };
    let before = rss().unwrap_or(0);
    let result = fleet::run(&spec, rss, &mut |line| eprintln!("{line}"));
    let per_device = result.rss_end().saturating_sub(before) as f64 / result.connected.max(1) as f64 / 1024.0;
    println!(
        "connected {} (refused {}) in {:.1} s; RSS before {:.1} MB, connected {:.1} MB, end {:.1} MB ({per_device:.1} KB per device); \
         commands sent {}, on time {}, late {}; growth after one period {:?} %",
        result.connected,
        result.refused,
        result.connect_time.as_secs_f64(),
        before as f64 / 1048576.0,
        result.rss_connected as f64 / 1048576.0,
        result.rss_end() as f64 / 1048576.0,
        result.commands_sent,
        result.on_time,
        result.late,
        result.growth_percent(spec.period)
    );
}
