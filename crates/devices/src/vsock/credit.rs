//! Credit-based flow control of one connection (virtio 1.2 section 5.10.6.3), both ways.
//!
//! Host to endpoint: we advertise `buf_alloc` bytes of buffer and `fwd_cnt`, the bytes we
//! handed to the endpoint's socket; the host may have at most `buf_alloc - (rx_cnt -
//! fwd_cnt)` bytes in flight, so what we buffer for a connection never exceeds `buf_alloc`.
//! A host that sends past its credit breaks the protocol and the connection is reset.
//!
//! Endpoint to host: the host advertises its own `buf_alloc`/`fwd_cnt` in every header; we
//! read from the endpoint's socket only as much as that leaves room for. Counters are
//! 32-bit and wrap, as in the spec.

/// The host's credit counters went somewhere they cannot go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreditError {
    /// The host sent more than the buffer we advertised.
    Overflow,
    /// The host's `fwd_cnt` went backwards or past what we sent it.
    BadFwdCnt,
}

/// Both directions' counters of one connection.
#[derive(Debug, Clone, Default)]
pub struct Credit {
    /// Buffer we advertise for host-to-endpoint data.
    pub buf_alloc: u32,
    /// Bytes received from the host.
    pub rx_cnt: u32,
    /// Bytes of those written to the endpoint's socket.
    pub fwd_cnt: u32,
    /// `fwd_cnt` as last told to the host.
    pub fwd_cnt_sent: u32,
    /// The host's buffer for endpoint-to-host data.
    pub peer_buf_alloc: u32,
    /// Bytes of ours the host has consumed.
    pub peer_fwd_cnt: u32,
    /// Bytes sent to the host.
    pub tx_cnt: u32,
}

impl Credit {
    /// A connection advertising `buf_alloc` bytes.
    pub fn new(buf_alloc: u32) -> Credit {
        Credit {
            buf_alloc,
            ..Credit::default()
        }
    }

    /// Takes the host's `buf_alloc`/`fwd_cnt` from one of its headers.
    pub fn update_peer(&mut self, buf_alloc: u32, fwd_cnt: u32) -> Result<(), CreditError> {
        let before = self.tx_cnt.wrapping_sub(self.peer_fwd_cnt);
        let after = self.tx_cnt.wrapping_sub(fwd_cnt);
        if after > before {
            return Err(CreditError::BadFwdCnt);
        }
        self.peer_buf_alloc = buf_alloc;
        self.peer_fwd_cnt = fwd_cnt;
        Ok(())
    }

    /// Bytes we may still send to the host.
    pub fn peer_free(&self) -> u32 {
        let in_flight = self.tx_cnt.wrapping_sub(self.peer_fwd_cnt);
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    /// Counts `n` bytes sent to the host (at most [`peer_free`](Self::peer_free)).
    pub fn sent(&mut self, n: u32) {
        self.tx_cnt = self.tx_cnt.wrapping_add(n);
    }

    /// Counts `n` bytes received from the host; refuses them if they exceed our buffer.
    pub fn received(&mut self, n: u32) -> Result<(), CreditError> {
        if u64::from(self.held()) + u64::from(n) > u64::from(self.buf_alloc) {
            return Err(CreditError::Overflow);
        }
        self.rx_cnt = self.rx_cnt.wrapping_add(n);
        Ok(())
    }

    /// Bytes from the host not yet handed to the endpoint.
    pub fn held(&self) -> u32 {
        self.rx_cnt.wrapping_sub(self.fwd_cnt)
    }

    /// Counts `n` bytes handed to the endpoint.
    pub fn forwarded(&mut self, n: u32) {
        self.fwd_cnt = self.fwd_cnt.wrapping_add(n);
    }

    /// Whether the host should hear of our `fwd_cnt` now: a quarter of the buffer was freed
    /// since we last said. A host out of credit has `buf_alloc` bytes with us, so draining
    /// them always crosses this.
    pub fn update_due(&self) -> bool {
        self.fwd_cnt.wrapping_sub(self.fwd_cnt_sent) >= (self.buf_alloc / 4).max(1)
    }

    /// Stamps our counters into a header going to the host.
    pub fn stamp(&mut self, buf_alloc: &mut u32, fwd_cnt: &mut u32) {
        *buf_alloc = self.buf_alloc;
        *fwd_cnt = self.fwd_cnt;
        self.fwd_cnt_sent = self.fwd_cnt;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_to_endpoint_is_bounded_by_our_buffer() {
        let mut c = Credit::new(1000);
        c.received(600).unwrap();
        c.received(400).unwrap();
        assert_eq!(c.received(1), Err(CreditError::Overflow));
        c.forwarded(250);
        assert!(c.update_due());
        let (mut b, mut f) = (0, 0);
        c.stamp(&mut b, &mut f);
        assert_eq!((b, f), (1000, 250));
        assert!(!c.update_due());
        c.received(250).unwrap();
        assert_eq!(c.received(1), Err(CreditError::Overflow));
        assert_eq!(c.received(u32::MAX), Err(CreditError::Overflow));
    }

    #[test]
    fn endpoint_to_host_follows_the_hosts_credit() {
        let mut c = Credit::new(1000);
        assert_eq!(c.peer_free(), 0);
        c.update_peer(4096, 0).unwrap();
        assert_eq!(c.peer_free(), 4096);
        c.sent(4000);
        assert_eq!(c.peer_free(), 96);
        c.update_peer(4096, 1000).unwrap();
        assert_eq!(c.peer_free(), 1096);
        // Backwards, or past what we sent.
        assert_eq!(c.update_peer(4096, 999), Err(CreditError::BadFwdCnt));
        assert_eq!(c.update_peer(4096, 4001), Err(CreditError::BadFwdCnt));
        // A smaller buffer than what is in flight leaves no credit, not a huge one.
        c.update_peer(10, 1000).unwrap();
        assert_eq!(c.peer_free(), 0);
    }

    #[test]
    fn counters_wrap() {
        let mut c = Credit::new(1000);
        c.tx_cnt = u32::MAX - 10;
        c.peer_fwd_cnt = u32::MAX - 10;
        c.update_peer(100, u32::MAX - 10).unwrap();
        c.sent(50);
        assert_eq!(c.peer_free(), 50);
        c.update_peer(100, 39).unwrap();
        assert_eq!(c.tx_cnt, 39);
        assert_eq!(c.peer_free(), 100);
        c.rx_cnt = u32::MAX - 5;
        c.fwd_cnt = u32::MAX - 5;
        c.received(1000).unwrap();
        c.forwarded(1000);
        c.received(1000).unwrap();
    }
}
