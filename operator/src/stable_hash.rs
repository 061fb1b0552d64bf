//! The hash behind the `spec-hash` annotation, which outlives the process
//! that wrote it: an operator upgrade must read its predecessor's hashes.
//!
//! std's `DefaultHasher` may change between Rust releases. This is the
//! function it computes today for a `str` (SipHash-1-3 with zero keys over
//! the bytes and a `0xff` terminator), written out so it cannot change
//! under us; keeping today's values means no child looks changed, and none
//! is applied again, after the switch.

/// The stable hash of `text`.
pub fn of_str(text: &str) -> u64 {
    let mut sip = Sip::default();
    let bytes = text.as_bytes();
    let mut words = bytes.chunks_exact(8);
    for word in words.by_ref() {
        sip.compress(u64::from_le_bytes(word.try_into().unwrap_or([0; 8])));
    }
    // The tail, then the terminator `str` hashing appends.
    let mut tail = [0u8; 8];
    let rest = words.remainder();
    tail[..rest.len()].copy_from_slice(rest);
    tail[rest.len()] = 0xff;
    let len = bytes.len().wrapping_add(1) as u64;
    if rest.len() == 7 {
        sip.compress(u64::from_le_bytes(tail));
        sip.finish(len << 56)
    } else {
        sip.finish((len << 56) | u64::from_le_bytes(tail))
    }
}

/// SipHash state keyed with (0, 0).
struct Sip([u64; 4]);

impl Default for Sip {
    fn default() -> Self {
        Sip([
            0x736f_6d65_7073_6575,
            0x646f_7261_6e64_6f6d,
            0x6c79_6765_6e65_7261,
            0x7465_6462_7974_6573,
        ])
    }
}

impl Sip {
    fn round(&mut self) {
        let [v0, v1, v2, v3] = &mut self.0;
        *v0 = v0.wrapping_add(*v1);
        *v1 = v1.rotate_left(13) ^ *v0;
        *v0 = v0.rotate_left(32);
        *v2 = v2.wrapping_add(*v3);
        *v3 = v3.rotate_left(16) ^ *v2;
        *v0 = v0.wrapping_add(*v3);
        *v3 = v3.rotate_left(21) ^ *v0;
        *v2 = v2.wrapping_add(*v1);
        *v1 = v1.rotate_left(17) ^ *v2;
        *v2 = v2.rotate_left(32);
    }

    /// One message word, one compression round (the "1" of 1-3).
    fn compress(&mut self, m: u64) {
        self.0[3] ^= m;
        self.round();
        self.0[0] ^= m;
    }

    /// The last word (length in the top byte), then three rounds.
    fn finish(mut self, last: u64) -> u64 {
        self.compress(last);
        self.0[2] ^= 0xff;
        for _ in 0..3 {
            self.round();
        }
        self.0.iter().fold(0, |h, v| h ^ v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values std's `DefaultHasher` gave (Rust 1.89 to today) for these
    /// strings: the annotations already on live objects.
    #[test]
    fn gives_the_values_already_written() {
        let cases = [
            ("", 0x3040_6ea5_23c5_3def),
            ("a", 0x719b_50b9_a4f0_e9f3),
            ("1234567", 0xb9a4_f30e_757f_e044),
            ("12345678", 0x40cc_4e54_4a5a_f2cd),
            (
                r#"{"apiVersion":"v1","kind":"ConfigMap"}"#,
                0x160f_f3e8_6a8b_2628,
            ),
        ];
        for (text, want) in cases {
            assert_eq!(of_str(text), want, "{text:?}");
        }
    }
}
