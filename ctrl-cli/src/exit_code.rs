//! Process exit statuses. mosquitto_ctrl exits with libmosquitto's error numbers, and scripts may
//! test them, so the same numbers are used here.

/// Success, and also every outcome mosquitto_ctrl reports only on stderr (server error replies,
/// CONNACK and SUBACK refusals, timeouts).
pub const OK: i32 = 0;
/// Usage, option and password-prompt errors.
pub const USAGE: i32 = 1;
/// MOSQ_ERR_NOMEM.
pub const NOMEM: i32 = 1;
/// MOSQ_ERR_PROTOCOL: malformed packet from the broker.
pub const PROTOCOL: i32 = 2;
/// MOSQ_ERR_INVAL: wrong arguments for a module command.
pub const INVALID_ARGUMENTS: i32 = 3;
/// MOSQ_ERR_TLS.
pub const TLS: i32 = 8;
/// MOSQ_ERR_NOT_SUPPORTED: unknown module.
pub const NOT_SUPPORTED: i32 = 10;
/// MOSQ_ERR_UNKNOWN: unknown module command (message already printed).
pub const UNKNOWN_COMMAND: i32 = 13;
/// MOSQ_ERR_ERRNO: the operating system refused the connection.
pub const ERRNO: i32 = 14;
/// MOSQ_ERR_EAI: host name lookup failed.
pub const LOOKUP: i32 = 15;

/// mosquitto_strerror for the codes above, used in `Error: <text>` lines.
pub fn strerror(code: i32) -> &'static str {
    match code {
        OK => "No error.",
        PROTOCOL => "A network protocol error occurred when communicating with the broker.",
        INVALID_ARGUMENTS => "Invalid function arguments provided.",
        TLS => "A TLS error occurred.",
        NOT_SUPPORTED => "This feature is not supported.",
        LOOKUP => "Lookup error.",
        NOMEM => "Out of memory.",
        _ => "Unknown error.",
    }
}
