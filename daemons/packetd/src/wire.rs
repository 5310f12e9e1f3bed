//! The reflector's wire rules in Rust, byte for byte those of `ebpf/packetd/packetd.bpf.c`
//! (see the comment at its top), for the userspace reflector ([`crate::userspace`]) and for
//! the Session-Sender's packets.

/// Length of the unauthenticated STAMP test packet (RFC 8762 §4.2.1 / §4.3.1).
pub const STAMP_LEN: usize = 44;
/// Seconds from the NTP epoch (1900) to the Unix epoch (1970).
pub const NTP_EPOCH_OFFSET: u64 = 2_208_988_800;
/// TTL / hop limit of STAMP replies (as the XDP program sets it).
pub const STAMP_TTL: u8 = 255;
/// TTL / hop limit of echo replies (as the XDP program sets it).
pub const ECHO_TTL: u8 = 64;

/// The 64-bit NTP timestamp of `utc_ns` nanoseconds since the Unix epoch, as 8 network-order
/// bytes: the same arithmetic as `put_ntp` in the XDP program (seconds wrap at 2^32).
pub fn ntp_bytes(utc_ns: u64) -> [u8; 8] {
    let secs = (utc_ns / 1_000_000_000 + NTP_EPOCH_OFFSET) & 0xffff_ffff;
    let frac = ((utc_ns % 1_000_000_000) << 32) / 1_000_000_000;
    let mut out = [0_u8; 8];
    out[0..4].copy_from_slice(&u32::try_from(secs).unwrap_or(0).to_be_bytes());
    out[4..8].copy_from_slice(&u32::try_from(frac).unwrap_or(0).to_be_bytes());
    out
}

/// Nanoseconds since the Unix epoch of an 8-byte NTP timestamp (era 0, i.e. 1968–2104).
pub fn ntp_to_unix_ns(b: &[u8; 8]) -> i128 {
    let secs = i128::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
    let frac = i128::from(u32::from_be_bytes([b[4], b[5], b[6], b[7]]));
    (secs - i128::from(NTP_EPOCH_OFFSET)) * 1_000_000_000 + ((frac * 1_000_000_000) >> 32)
}

/// Rewrites a STAMP request (the UDP payload, at least [`STAMP_LEN`] bytes) in place into the
/// stateless reflector's reply: returns `false` (and leaves it untouched) when it is too short.
/// `rx_ns`/`tx_ns` are UTC nanoseconds; `tx_ns` should be read as late as possible.
pub fn reflect_stamp_in_place(
    pkt: &mut [u8],
    ttl: u8,
    rx_ns: u64,
    tx_ns: u64,
    error_estimate: u16,
) -> bool {
    if pkt.len() < STAMP_LEN {
        return false;
    }
    let mut old = [0_u8; STAMP_LEN];
    old.copy_from_slice(&pkt[..STAMP_LEN]);
    let new = &mut pkt[..STAMP_LEN];
    new.fill(0);
    new[0..4].copy_from_slice(&old[0..4]); // Sequence Number (stateless: the sender's)
    new[12..14].copy_from_slice(&error_estimate.to_be_bytes()); // Error Estimate
    new[14..16].copy_from_slice(&old[14..16]); // SSID (RFC 8972)
    new[16..24].copy_from_slice(&ntp_bytes(rx_ns)); // Receive Timestamp
    new[24..28].copy_from_slice(&old[0..4]); // Session-Sender Sequence Number
    new[28..36].copy_from_slice(&old[4..12]); // Session-Sender Timestamp
    new[36..38].copy_from_slice(&old[12..14]); // Session-Sender Error Estimate
    new[40] = ttl; // Ses-Sender TTL
    new[4..12].copy_from_slice(&ntp_bytes(tx_ns)); // Timestamp (transmit)
    true
}

/// The current UTC time in nanoseconds since the Unix epoch.
pub fn utc_now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_layout_follows_rfc_8762_and_8972() {
        let mut p: Vec<u8> = (0..60_u8).collect();
        let req = p.clone();
        assert!(reflect_stamp_in_place(
            &mut p,
            42,
            1_000_000_000,
            2_500_000_000,
            0x8001
        ));
        assert_eq!(&p[0..4], &req[0..4]);
        assert_eq!(&p[4..12], &ntp_bytes(2_500_000_000));
        assert_eq!(&p[12..14], &[0x80, 0x01]);
        assert_eq!(&p[14..16], &req[14..16]);
        assert_eq!(&p[16..24], &ntp_bytes(1_000_000_000));
        assert_eq!(&p[24..28], &req[0..4]);
        assert_eq!(&p[28..36], &req[4..12]);
        assert_eq!(&p[36..38], &req[12..14]);
        assert_eq!(&p[38..40], &[0, 0]);
        assert_eq!(p[40], 42);
        assert_eq!(&p[41..44], &[0, 0, 0]);
        assert_eq!(&p[44..], &req[44..]);
        let mut short = vec![0_u8; 43];
        assert!(!reflect_stamp_in_place(&mut short, 1, 0, 0, 0));
        let ts = ntp_bytes(1_700_000_000_123_456_789);
        let back = ntp_to_unix_ns(&ts);
        assert!((back - 1_700_000_000_123_456_789).abs() <= 1, "{back}");
    }
}
