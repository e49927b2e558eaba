//! Front ends: each translates one protocol into [`super::ops`] calls and knows nothing of switching.

pub mod cluster;
pub mod docker;
pub mod http;
pub mod metrics;
