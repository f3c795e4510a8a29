//! The HTTP plumbing every request passes before and after its route: the order is
//! [`front_door::FrontDoor`]'s, read top to bottom there.

pub mod access_log;
pub mod body;
pub mod cors;
pub mod cross_site;
pub mod front_door;
pub mod multipart;
pub mod peer_trust;
pub mod request_id;
pub mod request_line;
pub mod routed;
