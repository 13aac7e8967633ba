//! The datapath's runtime log level, patched into the object before load.

/// Which aya-log statements in the eBPF programs emit records. The values are aya-log's levels
/// (error = 1 … trace = 5); `Off` (0) disables every statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum as _;

    #[test]
    fn levels_are_ordered_like_aya_log() {
        let values: Vec<u8> = LogLevel::value_variants().iter().map(|l| l.as_u8()).collect();
        assert_eq!(values, [0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn the_patched_global_is_aya_logs() {
        assert_eq!(skiff_common::names::GLOBAL_LOG_LEVEL, aya_log::LEVEL);
    }
}
