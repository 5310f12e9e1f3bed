//! Syslog over a byte stream (RFC 6587): octet counting (`LEN SP MSG`) or LF-terminated
//! frames, detected per frame from its first byte (a digit: octet counting; otherwise LF).
//! Pure: bytes in, frames out.

/// One thing the framer found in the stream.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A complete message.
    Message(Vec<u8>),
    /// A message longer than the limit, skipped whole; `len` is its length if known.
    TooLong {
        /// Its length when it was octet-counted.
        len: Option<usize>,
    },
    /// An octet count that is not a number; the stream cannot be resynchronised.
    BadCount(String),
}

/// The stream state of one connection.
#[derive(Debug)]
pub struct Framer {
    buf: Vec<u8>,
    max: usize,
    /// Bytes still to skip of an oversized octet-counted message.
    skip: usize,
    /// Dropping an oversized LF frame until its LF.
    skipping_line: bool,
}

/// Most digits an octet count may have (16 MiB limits fit in 8).
const MAX_COUNT_DIGITS: usize = 9;

impl Framer {
    /// A framer accepting messages of at most `max` bytes.
    pub fn new(max: usize) -> Self {
        Self {
            buf: Vec::new(),
            max,
            skip: 0,
            skipping_line: false,
        }
    }

    /// Adds received bytes.
    pub fn push(&mut self, mut data: &[u8]) {
        if self.skip > 0 {
            let n = self.skip.min(data.len());
            self.skip -= n;
            data = &data[n..];
        }
        self.buf.extend_from_slice(data);
    }

    /// Bytes buffered and not yet framed.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next frame, or `None` when more bytes are needed.
    pub fn next_frame(&mut self) -> Option<Frame> {
        if self.skipping_line {
            match self.buf.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    self.buf.drain(..=i);
                    self.skipping_line = false;
                }
                None => {
                    self.buf.clear();
                    return None;
                }
            }
        }
        // Tolerate stray line ends between frames.
        let start = self
            .buf
            .iter()
            .position(|&b| b != b'\n' && b != b'\r')
            .unwrap_or(self.buf.len());
        self.buf.drain(..start);
        let first = *self.buf.first()?;
        if first.is_ascii_digit() {
            return self.octet_counted();
        }
        match self.buf.iter().position(|&b| b == b'\n') {
            Some(i) if i > self.max => {
                self.buf.drain(..=i);
                Some(Frame::TooLong { len: None })
            }
            Some(i) => {
                let mut msg: Vec<u8> = self.buf.drain(..=i).collect();
                msg.pop();
                if msg.last() == Some(&b'\r') {
                    msg.pop();
                }
                Some(Frame::Message(msg))
            }
            None if self.buf.len() > self.max => {
                self.buf.clear();
                self.skipping_line = true;
                Some(Frame::TooLong { len: None })
            }
            None => None,
        }
    }

    fn octet_counted(&mut self) -> Option<Frame> {
        let digits = self
            .buf
            .iter()
            .take(MAX_COUNT_DIGITS + 1)
            .take_while(|b| b.is_ascii_digit())
            .count();
        if digits > MAX_COUNT_DIGITS {
            return Some(self.bad_count());
        }
        match self.buf.get(digits) {
            None => return None,
            Some(b' ') => {}
            Some(_) => return Some(self.bad_count()),
        }
        let len: usize = std::str::from_utf8(&self.buf[..digits])
            .ok()
            .and_then(|s| s.parse().ok())?;
        let total = digits + 1 + len;
        if len > self.max {
            let have = self.buf.len().min(total);
            self.buf.drain(..have);
            self.skip = total - have;
            return Some(Frame::TooLong { len: Some(len) });
        }
        if self.buf.len() < total {
            return None;
        }
        let msg = self.buf[digits + 1..total].to_vec();
        self.buf.drain(..total);
        Some(Frame::Message(msg))
    }

    fn bad_count(&mut self) -> Frame {
        let shown: String = String::from_utf8_lossy(&self.buf[..self.buf.len().min(16)]).into();
        self.buf.clear();
        Frame::BadCount(shown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(f: &mut Framer) -> Vec<Frame> {
        std::iter::from_fn(|| f.next_frame()).collect()
    }

    #[test]
    fn octet_counting_and_lf_mixed_and_split_anywhere() {
        let stream = b"11 <13>1 - - -<13>hello\r\n5 <1>ab\n";
        for cut in 0..stream.len() {
            let mut f = Framer::new(100);
            f.push(&stream[..cut]);
            let mut got = all(&mut f);
            f.push(&stream[cut..]);
            got.extend(all(&mut f));
            assert_eq!(
                got,
                [
                    Frame::Message(b"<13>1 - - -".to_vec()),
                    Frame::Message(b"<13>hello".to_vec()),
                    Frame::Message(b"<1>ab".to_vec()),
                ],
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn too_long_frames_are_skipped_and_reported() {
        let mut f = Framer::new(4);
        f.push(b"8 <1>abcd");
        assert_eq!(all(&mut f), [Frame::TooLong { len: Some(8) }]);
        f.push(b"e3 <1>");
        assert_eq!(all(&mut f), [Frame::Message(b"<1>".to_vec())]);
        f.push(b"<1>toolong");
        assert_eq!(all(&mut f), [Frame::TooLong { len: None }]);
        f.push(b"more\n<2>x\n");
        assert_eq!(all(&mut f), [Frame::Message(b"<2>x".to_vec())]);
    }

    #[test]
    fn a_count_that_is_not_a_number_is_reported() {
        let mut f = Framer::new(100);
        f.push(b"12x <1>");
        assert_eq!(all(&mut f), [Frame::BadCount("12x <1>".into())]);
    }
}
