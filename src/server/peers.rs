//! Open connections per peer address (`MAX_CONNECTIONS_PER_PEER`): one client cannot hold all
//! of the server's sockets. Peers listed in `TRUSTED_PROXIES` are exempt: every browser behind
//! such a proxy arrives from its address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use ipnet::IpNet;

pub struct PeerLimit {
    max: usize,
    exempt: Vec<IpNet>,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// Held by a connection; frees its place when the connection ends.
pub struct PeerSlot {
    limit: Arc<PeerLimit>,
    ip: IpAddr,
}

impl PeerLimit {
    /// `None` when `max` is 0 (no limit).
    pub fn new(max: usize, exempt: Vec<IpNet>) -> Option<Arc<PeerLimit>> {
        (max > 0).then(|| {
            Arc::new(PeerLimit {
                max,
                exempt,
                open: Mutex::new(HashMap::new()),
            })
        })
    }

    /// A place for one more connection from `ip`, or `None` when it has all it may have.
    /// An exempt peer gets a place that counts nothing.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Option<PeerSlot>> {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        if self.exempt.iter().any(|net| net.contains(&ip)) {
            return Some(None);
        }
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(ip).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(Some(PeerSlot {
            limit: Arc::clone(self),
            ip,
        }))
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut open = self
            .limit
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))
    }

    #[test]
    fn a_peer_gets_at_most_its_share_and_a_closed_connection_frees_one() {
        let Some(limit) = PeerLimit::new(2, vec![]) else {
            panic!("a limit of 2 is a limit");
        };
        let a1 = limit.admit(ip("10.1.1.1"));
        let _a2 = limit.admit(ip("10.1.1.1"));
        assert!(a1.is_some());
        assert!(limit.admit(ip("10.1.1.1")).is_none());
        assert!(
            limit.admit(ip("::ffff:10.1.1.1")).is_none(),
            "mapped v4 is the same peer"
        );
        assert!(
            limit.admit(ip("10.1.1.2")).is_some(),
            "peers are counted apart"
        );
        drop(a1);
        assert!(limit.admit(ip("10.1.1.1")).is_some());
    }

    #[test]
    fn trusted_proxies_are_exempt_and_zero_means_no_limit() {
        let exempt = vec!["10.0.0.0/8".parse().unwrap_or_else(|_| IpNet::default())];
        let Some(limit) = PeerLimit::new(1, exempt) else {
            panic!("a limit of 1 is a limit");
        };
        let held: Vec<_> = (0..5).map(|_| limit.admit(ip("10.0.0.9"))).collect();
        assert!(held.iter().all(Option::is_some));
        assert!(PeerLimit::new(0, vec![]).is_none());
    }
}
