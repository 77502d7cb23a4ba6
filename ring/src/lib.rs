//! Placement for ringkv: where every key lives.
//!
//! Keys hash onto a 64-bit token ring ([`token_of`]). Every member owns a set of virtual-node
//! tokens ([`Member::tokens`], or the deterministic [`tokens_for`]); a key belongs to the first
//! virtual node at or clockwise after its token, and its *preference list* is built by walking
//! the ring clockwise from there according to a replication [`Strategy`]: [`Strategy::Simple`]
//! takes the first RF distinct nodes, [`Strategy::PerDatacenter`] is Cassandra's
//! NetworkTopologyStrategy (an RF per datacenter, spread over racks).
//!
//! [`Ring::new`] validates a membership and precomputes the preference list of every virtual-node
//! range, so [`Ring::replicas`] is a binary search returning a borrowed slice. The crate is pure:
//! no I/O, no threads, no clocks.
//!
//! ```
//! use ring::{tokens_for, Member, Ring, Strategy};
//!
//! let members: Vec<Member> = (1..=5)
//!     .map(|id| Member {
//!         id,
//!         datacenter: "dc1".into(),
//!         rack: format!("rack{}", id % 3),
//!         tokens: tokens_for(id, 256),
//!     })
//!     .collect();
//! let ring = Ring::new(members, Strategy::Simple { rf: 3 }).expect("valid ring");
//! let replicas = ring.replicas_for_key(b"user:42");
//! assert_eq!(replicas.len(), 3);
//! assert_eq!(ring.replicas_in(ring::token_of(b"user:42"), "dc1").count(), 3);
//! ```
//!
//! # Layout
//!
//! - `token`: [`Token`], [`token_of`], [`tokens_for`], [`TokenRange`].
//! - `topology`: [`NodeId`], [`Member`], [`Strategy`].
//! - `error`: [`RingError`], why a membership or strategy is refused.
//! - `placement`: the private algorithms that compute preference lists for every virtual node.
//! - `ring`: [`Ring`], the validated, precomputed ring and its queries.

mod error;
mod placement;
mod ring;
mod token;
mod topology;

pub use error::RingError;
pub use ring::Ring;
pub use token::{token_of, tokens_for, Token, TokenRange};
pub use topology::{Member, NodeId, Strategy};
