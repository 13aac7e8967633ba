//! Reading certificates back (shared with the agent: [`skiff_tls::cert`]).

pub use skiff_tls::cert::{CertInfo, info, parse_der, parse_pem};
