//! The wire vocabulary and transport shared by ringkv nodes and clients.
//!
//! # Layout
//! - [`version`]: [`Version`] `(hlc, node)` and the [`HybridClock`] that issues it.
//! - [`record`]: [`Record`], a last-write-wins value or tombstone.
//! - [`consistency`]: [`Consistency`] levels and their parsing.
//! - [`error`]: stable [`ErrorCode`]s and [`ErrorReply`].
//! - [`limits`]: key, value and frame size limits.
//! - [`membership`]: the gossiped ring state, endpoint states and topology-change operations.
//! - [`message`]: the request and response enums and their frames.
//! - [`codec`]: framing and postcard encoding with a wire version marker.
//! - [`tls`]: the cluster CA, certificate issuance, mutual-TLS configuration and roles.
//! - [`transport`]: QUIC endpoints, multiplexed [`transport::Channel`]s, the connection pool,
//!   the server loop, and the async runtime they run on.

pub mod codec;
pub mod consistency;
pub mod error;
pub mod limits;
pub mod membership;
pub mod message;
pub mod record;
pub mod tls;
pub mod transport;
pub mod version;

pub use consistency::Consistency;
pub use error::{ErrorCode, ErrorReply};
pub use message::{Request, Response};
pub use record::Record;
pub use version::{HybridClock, Version};
