//! The datapath's runtime log level, patched into the object before load.

use std::str::FromStr;

/// Which aya-log statements in the eBPF programs emit records. The values are aya-log's levels
/// (error = 1 … trace = 5); `Off` (0) disables every statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Off,
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub fn as_u8(self) -> u8 {
        match self {
            LogLevel::Off => 0,
            LogLevel::Error => aya_log::Level::Error as u8,
            LogLevel::Warn => aya_log::Level::Warn as u8,
            LogLevel::Info => aya_log::Level::Info as u8,
            LogLevel::Debug => aya_log::Level::Debug as u8,
            LogLevel::Trace => aya_log::Level::Trace as u8,
        }
    }
}

impl FromStr for LogLevel {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "off" => LogLevel::Off,
            "error" => LogLevel::Error,
            "warn" => LogLevel::Warn,
            "info" => LogLevel::Info,
            "debug" => LogLevel::Debug,
            "trace" => LogLevel::Trace,
            other => {
                return Err(format!("unknown log level {other:?} (off, error, warn, info, debug, trace)"));
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_ordered_like_aya_log() {
        let all = ["off", "error", "warn", "info", "debug", "trace"];
        let values: Vec<u8> =
            all.iter().map(|s| s.parse::<LogLevel>().expect("known level").as_u8()).collect();
        assert_eq!(values, [0, 1, 2, 3, 4, 5]);
        assert!("loud".parse::<LogLevel>().is_err());
    }
}
