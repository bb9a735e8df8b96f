//! Connection options: mosquitto_ctrl's command-line grammar, its error messages, and its
//! options files.
//!
//! Options are the leading words that start with `-`; the first other word is the module name.
//! Options files hold one `-option value` pair per line (`#` starts a comment line) and give
//! defaults that the command line overrides. The files read are `-o FILE` if given, else
//! `$XDG_CONFIG_HOME/mosquitto_ctrl` (or `~/.config/mosquitto_ctrl`) and then `dynsec-ctrl` in
//! the same directory.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::text::{atoi, lossy};

/// The timeout mosquitto_ctrl hard-codes: give up this long after starting to connect.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolVersion {
    V31,
    V311,
    V5,
}

/// TLS settings. TLS is used when a CA file or directory is given (as mosquitto_ctrl does), or
/// for an `mqtts://` URL.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    pub cafile: Option<PathBuf>,
    pub capath: Option<PathBuf>,
    pub certfile: Option<PathBuf>,
    pub keyfile: Option<PathBuf>,
    pub ciphers: Option<String>,
    pub insecure: bool,
    pub tls_version: Option<String>,
    pub alpn: Option<String>,
    pub keyform: Option<String>,
    pub engine: Option<String>,
    pub engine_kpass_sha1: Option<String>,
    pub psk: Option<String>,
    pub psk_identity: Option<String>,
    /// Set by an `mqtts://` URL: use TLS with the system's trust store when no CA is given.
    pub url_requested_tls: bool,
}

impl TlsOptions {
    pub fn has_ca(&self) -> bool {
        self.cafile.is_some() || self.capath.is_some()
    }

    /// Whether the connection will be encrypted (and so no plain-text warning is printed).
    pub fn enabled(&self) -> bool {
        self.has_ca() || self.url_requested_tls
    }
}

#[derive(Debug, Clone)]
pub struct ConnectionOptions {
    /// `None` until set; "localhost" is the default applied by [`ConnectionOptions::host`].
    pub host: Option<String>,
    /// `None` = not given (1883, or 8883 with TLS); `Some(0)` = `host` is a unix socket path.
    pub port: Option<i32>,
    pub username: Option<Vec<u8>>,
    pub password: Option<Vec<u8>>,
    pub client_id: Option<Vec<u8>>,
    pub qos: u8,
    pub protocol: ProtocolVersion,
    pub bind_address: Option<String>,
    pub debug: bool,
    pub quiet: bool,
    pub verbose: bool,
    pub options_file: Option<PathBuf>,
    pub proxy: Option<String>,
    pub tls: TlsOptions,
    /// dynsec-ctrl addition `--timeout SECONDS`.
    pub timeout: Duration,
    /// dynsec-ctrl addition `--json`: print the raw response object instead of formatted text.
    pub json_output: bool,
    /// `-f FILE` (mosquitto_ctrl 2.1): dynsec commands edit this dynamic-security.json offline.
    pub data_file: Option<PathBuf>,
}

impl Default for ConnectionOptions {
    fn default() -> Self {
        ConnectionOptions {
            host: None,
            port: None,
            username: None,
            password: None,
            client_id: None,
            qos: 1,
            protocol: ProtocolVersion::V5,
            bind_address: None,
            debug: false,
            quiet: false,
            verbose: false,
            options_file: None,
            proxy: None,
            tls: TlsOptions::default(),
            timeout: DEFAULT_TIMEOUT,
            json_output: false,
            data_file: None,
        }
    }
}

impl ConnectionOptions {
    pub fn host(&self) -> &str {
        self.host.as_deref().unwrap_or("localhost")
    }

    pub fn is_unix_socket(&self) -> bool {
        self.port == Some(0)
    }

    /// The TCP port: explicit, else 8883 with TLS, else 1883.
    pub fn effective_port(&self) -> i32 {
        match self.port {
            Some(port) => port,
            None if self.tls.has_ca() || self.tls.psk.is_some() => 8883,
            None => 1883,
        }
    }
}

/// Why option processing stopped before the module name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OptionStop {
    /// An error, already formatted (may end with a blank line, like mosquitto_ctrl's).
    Error(String),
    /// `--help`.
    Help,
    /// `--version`.
    Version,
}

/// The result of parsing the whole command line.
#[derive(Debug)]
pub struct Parsed {
    pub options: ConnectionOptions,
    /// The words after the options: module name and its arguments.
    pub rest: Vec<Vec<u8>>,
}

/// Why the command line could not be used. `words_left` mirrors mosquitto_ctrl's argument count
/// after a failed parse, which decides between usage (fewer than 2) and "module not supported".
#[derive(Debug)]
pub struct ParseFailure {
    pub stop: OptionStop,
    pub words_left: usize,
}

/// Parses the command line (without the program name), after reading options files.
pub fn parse_command_line(args: &[Vec<u8>], env: &Environment) -> Result<Parsed, ParseFailure> {
    let mut options = ConnectionOptions::default();
    let explicit_file = find_options_file_argument(args);
    let files: Vec<PathBuf> = match explicit_file {
        Some(file) => vec![file],
        None => env.default_options_files(),
    };
    for file in files {
        if let Err(stop) = load_options_file(&mut options, &file) {
            return Err(ParseFailure { stop, words_left: args.len() });
        }
    }
    let consumed = match apply_words(&mut options, args) {
        Ok(consumed) => consumed,
        Err((consumed, stop)) => return Err(ParseFailure { stop, words_left: args.len() - consumed }),
    };
    if let Some(message) = validate(&options) {
        return Err(ParseFailure { stop: OptionStop::Error(message), words_left: args.len() - consumed });
    }
    Ok(Parsed { options, rest: args[consumed..].to_vec() })
}

/// Where default options files are looked for.
#[derive(Debug, Clone, Default)]
pub struct Environment {
    pub xdg_config_home: Option<PathBuf>,
    pub home: Option<PathBuf>,
}

impl Environment {
    pub fn from_process() -> Environment {
        Environment {
            xdg_config_home: std::env::var_os("XDG_CONFIG_HOME").map(PathBuf::from),
            home: std::env::var_os("HOME").map(PathBuf::from),
        }
    }

    /// mosquitto_ctrl's file first, then ours, so that ours can override it.
    fn default_options_files(&self) -> Vec<PathBuf> {
        let dir = match (&self.xdg_config_home, &self.home) {
            (Some(xdg), _) => xdg.clone(),
            (None, Some(home)) => home.join(".config"),
            (None, None) => return Vec::new(),
        };
        vec![dir.join("mosquitto_ctrl"), dir.join("dynsec-ctrl")]
    }
}

/// Finds `-o FILE` among the leading options without applying anything, so that the file can be
/// loaded before the command line overrides it. (mosquitto_ctrl 2.0.11 loaded the default file
/// before seeing `-o`, so `-o` had no effect: issue #2471.)
fn find_options_file_argument(args: &[Vec<u8>]) -> Option<PathBuf> {
    let mut found = None;
    let mut i = 0;
    while i < args.len() && args[i].first() == Some(&b'-') {
        let word = args[i].as_slice();
        if option_takes_value(word) {
            if word == b"-o" {
                found = args.get(i + 1).map(|v| PathBuf::from(lossy(v)));
            }
            i += 2;
        } else if is_flag(word) {
            i += 1;
        } else {
            break;
        }
    }
    found
}

fn is_flag(word: &[u8]) -> bool {
    matches!(
        word,
        b"-d" | b"--debug" | b"--help" | b"--insecure" | b"--quiet" | b"-v" | b"--verbose" | b"--version" | b"--json"
    )
}

fn option_takes_value(word: &[u8]) -> bool {
    missing_value_message(word).is_some()
}

/// The message printed when an option that needs a value is the last word.
fn missing_value_message(word: &[u8]) -> Option<&'static str> {
    Some(match word {
        b"-A" => "Error: -A argument given but no address specified.\n\n",
        b"--cafile" => "Error: --cafile argument given but no file specified.\n\n",
        b"--capath" => "Error: --capath argument given but no directory specified.\n\n",
        b"--cert" => "Error: --cert argument given but no file specified.\n\n",
        b"--ciphers" => "Error: --ciphers argument given but no ciphers specified.\n\n",
        b"-h" | b"--host" => "Error: -h argument given but no host specified.\n\n",
        b"-i" | b"--id" => "Error: -i argument given but no id specified.\n\n",
        b"--key" => "Error: --key argument given but no file specified.\n\n",
        b"--keyform" => "Error: --keyform argument given but no keyform specified.\n\n",
        b"-L" | b"--url" => "Error: -L argument given but no URL specified.\n\n",
        b"-o" => "Error: -o argument given but no options file specified.\n\n",
        b"-f" => "Error: -f argument given but no data file specified.\n\n",
        b"-p" | b"--port" => "Error: -p argument given but no port specified.\n\n",
        b"-P" | b"--pw" => "Error: -P argument given but no password specified.\n\n",
        b"--proxy" => "Error: --proxy argument given but no proxy url specified.\n\n",
        b"--psk" => "Error: --psk argument given but no key specified.\n\n",
        b"--psk-identity" => "Error: --psk-identity argument given but no identity specified.\n\n",
        b"-q" | b"--qos" => "Error: -q argument given but no QoS specified.\n\n",
        b"--tls-alpn" => "Error: --tls-alpn argument given but no protocol specified.\n\n",
        b"--tls-engine" => "Error: --tls-engine argument given but no engine_id specified.\n\n",
        b"--tls-engine-kpass-sha1" => "Error: --tls-engine-kpass-sha1 argument given but no kpass sha1 specified.\n\n",
        b"--tls-version" => "Error: --tls-version argument given but no version specified.\n\n",
        b"-u" | b"--username" => "Error: -u argument given but no username specified.\n\n",
        b"--unix" => "Error: --unix argument given but no socket path specified.\n\n",
        b"-V" | b"--protocol-version" => "Error: --protocol-version argument given but no version specified.\n\n",
        b"--timeout" => "Error: --timeout argument given but no timeout specified.\n\n",
        _ => return None,
    })
}

/// Applies leading option words. Returns how many words were consumed; on a stop, also how many
/// had been consumed before the offending word.
fn apply_words(options: &mut ConnectionOptions, words: &[Vec<u8>]) -> Result<usize, (usize, OptionStop)> {
    let mut i = 0;
    while i < words.len() && words[i].first() == Some(&b'-') {
        let word = words[i].as_slice();
        if is_flag(word) {
            match word {
                b"-d" | b"--debug" => options.debug = true,
                b"--help" => return Err((i, OptionStop::Help)),
                b"--insecure" => options.tls.insecure = true,
                b"--quiet" => options.quiet = true,
                b"-v" | b"--verbose" => options.verbose = true,
                b"--version" => return Err((i, OptionStop::Version)),
                b"--json" => options.json_output = true,
                _ => {}
            }
            i += 1;
            continue;
        }
        let Some(missing) = missing_value_message(word) else {
            return Err((i, OptionStop::Error(format!("Error: Unknown option '{}'.\n", lossy(word)))));
        };
        let Some(value) = words.get(i + 1) else {
            return Err((i, OptionStop::Error(missing.to_string())));
        };
        apply_value(options, word, value).map_err(|stop| (i, stop))?;
        i += 2;
    }
    Ok(i)
}

fn path(value: &[u8]) -> Option<PathBuf> {
    Some(PathBuf::from(lossy(value)))
}

fn apply_value(options: &mut ConnectionOptions, word: &[u8], value: &[u8]) -> Result<(), OptionStop> {
    let text = || Some(lossy(value));
    match word {
        b"-A" => options.bind_address = text(),
        b"--cafile" => options.tls.cafile = path(value),
        b"--capath" => options.tls.capath = path(value),
        b"--cert" => options.tls.certfile = path(value),
        b"--ciphers" => options.tls.ciphers = text(),
        b"-h" | b"--host" => options.host = text(),
        b"-i" | b"--id" => options.client_id = Some(value.to_vec()),
        b"--key" => options.tls.keyfile = path(value),
        b"--keyform" => options.tls.keyform = text(),
        b"-L" | b"--url" => apply_url(options, value)?,
        b"-o" => options.options_file = path(value),
        b"-f" => options.data_file = path(value),
        b"-p" | b"--port" => {
            let port = atoi(value);
            if !(0..=65535).contains(&port) {
                return Err(OptionStop::Error(format!("Error: Invalid port given: {port}\n")));
            }
            options.port = Some(port);
        }
        b"-P" | b"--pw" => options.password = Some(value.to_vec()),
        b"--proxy" => {
            if !value.starts_with(b"socks5h://") {
                return Err(OptionStop::Error(format!("Error: Unsupported proxy protocol: {}\n", lossy(value))));
            }
            options.proxy = text();
        }
        b"--psk" => options.tls.psk = text(),
        b"--psk-identity" => options.tls.psk_identity = text(),
        b"-q" | b"--qos" => {
            let qos = atoi(value);
            if !(0..=2).contains(&qos) {
                return Err(OptionStop::Error(format!("Error: Invalid QoS given: {qos}\n")));
            }
            options.qos = qos as u8;
        }
        b"--tls-alpn" => options.tls.alpn = text(),
        b"--tls-engine" => options.tls.engine = text(),
        b"--tls-engine-kpass-sha1" => options.tls.engine_kpass_sha1 = text(),
        b"--tls-version" => options.tls.tls_version = text(),
        b"-u" | b"--username" => options.username = Some(value.to_vec()),
        b"--unix" => {
            options.host = text();
            options.port = Some(0);
        }
        b"-V" | b"--protocol-version" => {
            options.protocol = match value {
                b"mqttv31" | b"31" => ProtocolVersion::V31,
                b"mqttv311" | b"311" => ProtocolVersion::V311,
                b"mqttv5" | b"5" => ProtocolVersion::V5,
                _ => return Err(OptionStop::Error("Error: Invalid protocol version argument given.\n\n".into())),
            }
        }
        b"--timeout" => {
            let seconds = std::str::from_utf8(value).ok().and_then(|s| s.trim().parse::<f64>().ok());
            match seconds {
                Some(s) if s.is_finite() && s > 0.0 && s <= 86_400.0 => options.timeout = Duration::from_secs_f64(s),
                _ => {
                    return Err(OptionStop::Error(format!(
                        "Error: Invalid timeout given: {} (seconds, > 0)\n",
                        lossy(value)
                    )));
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// `-L mqtt(s)://[username[:password]@]host[:port]/topic`, parsed as mosquitto_ctrl does
/// (the topic is required but unused).
fn apply_url(options: &mut ConnectionOptions, url: &[u8]) -> Result<(), OptionStop> {
    let (rest, port, tls) = if url.len() >= 7 && url[..7].eq_ignore_ascii_case(b"mqtt://") {
        (&url[7..], 1883, false)
    } else if url.len() >= 8 && url[..8].eq_ignore_ascii_case(b"mqtts://") {
        (&url[8..], 8883, true)
    } else {
        return Err(OptionStop::Error("Error: unsupported URL scheme.\n\n".into()));
    };
    let Some(slash) = rest.iter().position(|&b| b == b'/') else {
        return Err(OptionStop::Error("Error: Invalid URL for -L argument specified - topic missing.\n".into()));
    };
    let mut authority = &rest[..slash];
    options.port = Some(port);
    options.tls.url_requested_tls = tls;
    if let Some(at) = authority.iter().position(|&b| b == b'@') {
        let credentials = &authority[..at];
        match credentials.iter().position(|&b| b == b':') {
            Some(colon) => {
                options.username = Some(credentials[..colon].to_vec());
                options.password = Some(credentials[colon + 1..].to_vec());
            }
            None => options.username = Some(credentials.to_vec()),
        }
        authority = &authority[at + 1..];
    }
    match authority.iter().position(|&b| b == b':') {
        Some(colon) => {
            options.host = Some(lossy(&authority[..colon]));
            options.port = Some(atoi(&authority[colon + 1..]));
        }
        None => options.host = Some(lossy(authority)),
    }
    Ok(())
}

/// Checks made after all options are known.
fn validate(options: &ConnectionOptions) -> Option<String> {
    let tls = &options.tls;
    if tls.certfile.is_some() != tls.keyfile.is_some() {
        return Some("Error: Both certfile and keyfile must be provided if one of them is set.\n".into());
    }
    if tls.keyform.is_some() && tls.keyfile.is_none() {
        return Some("Error: If keyform is set, keyfile must be also specified.\n".into());
    }
    if tls.engine_kpass_sha1.is_some() && (tls.keyform.is_none() || tls.engine.is_none()) {
        return Some(
            "Error: when using tls-engine-kpass-sha1, both tls-engine and keyform must also be provided.\n".into(),
        );
    }
    if tls.has_ca() && tls.psk.is_some() {
        return Some("Error: Only one of --psk or --cafile/--capath may be used at once.\n".into());
    }
    if tls.psk.is_some() && tls.psk_identity.is_none() {
        return Some("Error: --psk-identity required if --psk used.\n".into());
    }
    None
}

/// Reads one options file; a missing or unreadable file is silently skipped, as in mosquitto_ctrl.
fn load_options_file(options: &mut ConnectionOptions, file: &Path) -> Result<(), OptionStop> {
    let Ok(content) = std::fs::read(file) else {
        return Ok(());
    };
    for line in content.split(|&b| b == b'\n') {
        if line.first() == Some(&b'#') {
            continue;
        }
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        // strtok(line, " ") twice: the first two space-separated tokens; the rest is ignored.
        let words: Vec<Vec<u8>> =
            line.split(|&b| b == b' ').filter(|w| !w.is_empty()).take(2).map(<[u8]>::to_vec).collect();
        if words.is_empty() {
            continue;
        }
        match apply_words(options, &words) {
            Ok(_) => {}
            // --help/--version in a file stop nothing useful; mosquitto_ctrl ignores the rest of the line.
            Err((_, OptionStop::Help | OptionStop::Version)) => {}
            Err((_, stop @ OptionStop::Error(_))) => return Err(stop),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<Vec<u8>> {
        line.split_whitespace().map(|w| w.as_bytes().to_vec()).collect()
    }

    fn parse(line: &str) -> Result<Parsed, ParseFailure> {
        parse_command_line(&words(line), &Environment::default())
    }

    #[test]
    fn options_then_module() {
        let parsed = parse("-h example -p 1884 -u admin -P pw -V 311 dynsec listClients").unwrap();
        assert_eq!(parsed.options.host(), "example");
        assert_eq!(parsed.options.effective_port(), 1884);
        assert_eq!(parsed.options.protocol, ProtocolVersion::V311);
        assert_eq!(parsed.rest, words("dynsec listClients"));
    }

    #[test]
    fn unknown_option_keeps_mosquitto_word_count() {
        let failure = parse("-p 1 -x dynsec help").unwrap_err();
        assert_eq!(failure.stop, OptionStop::Error("Error: Unknown option '-x'.\n".into()));
        assert_eq!(failure.words_left, 3);
    }

    #[test]
    fn port_and_qos_ranges() {
        assert!(
            matches!(parse("-p 99999 dynsec x").unwrap_err().stop, OptionStop::Error(m) if m == "Error: Invalid port given: 99999\n")
        );
        assert!(
            matches!(parse("-q 3 dynsec x").unwrap_err().stop, OptionStop::Error(m) if m == "Error: Invalid QoS given: 3\n")
        );
    }

    #[test]
    fn url_sets_credentials_host_and_port() {
        let parsed = parse("-L mqtt://bob:secret@broker:1999/topic dynsec listClients").unwrap();
        assert_eq!(parsed.options.username.as_deref(), Some(&b"bob"[..]));
        assert_eq!(parsed.options.password.as_deref(), Some(&b"secret"[..]));
        assert_eq!(parsed.options.host(), "broker");
        assert_eq!(parsed.options.effective_port(), 1999);
        assert!(
            matches!(parse("-L mqtt://broker dynsec x").unwrap_err().stop, OptionStop::Error(m) if m.contains("topic missing"))
        );
    }

    #[test]
    fn tls_defaults_port_8883() {
        let parsed = parse("--cafile ca.pem dynsec listClients").unwrap();
        assert_eq!(parsed.options.effective_port(), 8883);
        assert!(parsed.options.tls.enabled());
    }

    #[test]
    fn options_file_gives_defaults_that_the_command_line_overrides() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("mosquitto_ctrl"), "# comment\n-h filehost\n-p 1999\n-u fileuser\n").unwrap();
        std::fs::write(dir.path().join("dynsec-ctrl"), "-p 2000 ignored-extra\n").unwrap();
        let env = Environment { xdg_config_home: Some(dir.path().to_path_buf()), home: None };
        let parsed = parse_command_line(&words("-u cli dynsec listClients"), &env).unwrap();
        assert_eq!(parsed.options.host(), "filehost");
        assert_eq!(parsed.options.effective_port(), 2000);
        assert_eq!(parsed.options.username.as_deref(), Some(&b"cli"[..]));

        let explicit = dir.path().join("other");
        std::fs::write(&explicit, "-h explicit\n").unwrap();
        let line = format!("-o {} dynsec listClients", explicit.display());
        let parsed = parse_command_line(&words(&line), &env).unwrap();
        assert_eq!(parsed.options.host(), "explicit");
        assert_eq!(parsed.options.port, None);
    }

    #[test]
    fn cert_without_key_is_refused() {
        let failure = parse("--cert c.pem dynsec listClients").unwrap_err();
        assert!(matches!(failure.stop, OptionStop::Error(m) if m.starts_with("Error: Both certfile and keyfile")));
    }
}
