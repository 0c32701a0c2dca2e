//! Just enough TLS to read the server name out of a ClientHello.

/// The most we buffer while waiting for a complete ClientHello.
pub(crate) const MAX_HELLO: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Hello {
    /// A complete ClientHello; its SNI host name, if it has one.
    Complete(Option<String>),
    /// Looks like TLS so far; read more.
    Incomplete,
    /// Not a TLS ClientHello.
    NotTls,
}

/// Parse the start of a client's byte stream as TLS records carrying a
/// ClientHello (possibly fragmented over several handshake records).
pub(crate) fn parse_client_hello(buf: &[u8]) -> Hello {
    // Reassemble the handshake layer from consecutive handshake records.
    let mut handshake = Vec::new();
    let mut pos = 0;
    loop {
        let Some(header) = buf.get(pos..pos + 5) else {
            return if buf.len() - pos > 0 && !record_prefix_ok(&buf[pos..]) {
                Hello::NotTls
            } else {
                Hello::Incomplete
            };
        };
        if !record_prefix_ok(header) {
            return Hello::NotTls;
        }
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if len == 0 || len > 16_384 + 256 {
            return Hello::NotTls;
        }
        let Some(fragment) = buf.get(pos + 5..pos + 5 + len) else {
            return Hello::Incomplete;
        };
        handshake.extend_from_slice(fragment);
        pos += 5 + len;
        if handshake.len() >= 4 {
            if handshake[0] != 1 {
                return Hello::NotTls; // not a ClientHello
            }
            let body_len = (usize::from(handshake[1]) << 16)
                | (usize::from(handshake[2]) << 8)
                | usize::from(handshake[3]);
            if body_len + 4 > MAX_HELLO {
                return Hello::NotTls;
            }
            if handshake.len() >= body_len + 4 {
                return match sni_of(&handshake[4..4 + body_len]) {
                    Some(sni) => Hello::Complete(sni),
                    None => Hello::NotTls,
                };
            }
        }
    }
}

/// Content type 22 (handshake), major version 3.
fn record_prefix_ok(bytes: &[u8]) -> bool {
    bytes.first().is_none_or(|&b| b == 0x16) && bytes.get(1).is_none_or(|&b| b == 0x03)
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, tail) = (self.buf.get(..n)?, self.buf.get(n..)?);
        self.buf = tail;
        Some(head)
    }
    fn u8(&mut self) -> Option<usize> {
        self.take(1).map(|b| usize::from(b[0]))
    }
    fn u16(&mut self) -> Option<usize> {
        self.take(2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    }
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(n)
    }
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(n)
    }
}

/// The SNI of a ClientHello body: `Some(None)` when it has no SNI extension,
/// `None` when the body is malformed.
fn sni_of(body: &[u8]) -> Option<Option<String>> {
    let mut r = Reader { buf: body };
    r.take(2)?; // legacy_version
    r.take(32)?; // random
    r.vec8()?; // session id
    r.vec16()?; // cipher suites
    r.vec8()?; // compression methods
    if r.buf.is_empty() {
        return Some(None); // no extensions at all
    }
    let mut exts = Reader { buf: r.vec16()? };
    while !exts.buf.is_empty() {
        let kind = exts.u16()?;
        let data = exts.vec16()?;
        if kind != 0 {
            continue;
        }
        let mut list = Reader {
            buf: Reader { buf: data }.vec16()?,
        };
        while !list.buf.is_empty() {
            let name_type = list.u8()?;
            let name = list.vec16()?;
            if name_type == 0 {
                let name = std::str::from_utf8(name).ok()?;
                return Some(Some(name.to_string()));
            }
        }
        return Some(None);
    }
    Some(None)
}

/// A minimal, well-formed TLS 1.2-style ClientHello record, optionally with an
/// SNI extension. For tests and the benchmark.
#[doc(hidden)]
pub fn build_client_hello(sni: Option<&str>) -> Vec<u8> {
    let mut ext = Vec::new();
    if let Some(name) = sni {
        let name = name.as_bytes();
        let mut list = vec![0u8];
        list.extend_from_slice(&(name.len() as u16).to_be_bytes());
        list.extend_from_slice(name);
        let mut data = (list.len() as u16).to_be_bytes().to_vec();
        data.extend_from_slice(&list);
        ext.extend_from_slice(&0u16.to_be_bytes());
        ext.extend_from_slice(&(data.len() as u16).to_be_bytes());
        ext.extend_from_slice(&data);
    }
    // supported_versions (TLS 1.3), to look like a modern hello
    ext.extend_from_slice(&[0x00, 0x2b, 0x00, 0x03, 0x02, 0x03, 0x04]);
    let mut body = vec![0x03, 0x03];
    body.extend_from_slice(&[0x42; 32]);
    body.push(0); // session id
    body.extend_from_slice(&[0x00, 0x02, 0x13, 0x01]); // TLS_AES_128_GCM_SHA256
    body.extend_from_slice(&[0x01, 0x00]); // null compression
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);
    let mut hs = vec![0x01];
    hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    record.extend_from_slice(&hs);
    record
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sni() {
        let hello = build_client_hello(Some("Example.COM"));
        assert_eq!(
            parse_client_hello(&hello),
            Hello::Complete(Some("Example.COM".into()))
        );
        assert_eq!(
            parse_client_hello(&build_client_hello(None)),
            Hello::Complete(None)
        );
    }

    #[test]
    fn incomplete_at_every_prefix() {
        let hello = build_client_hello(Some("example.com"));
        for cut in 0..hello.len() {
            assert_eq!(
                parse_client_hello(&hello[..cut]),
                Hello::Incomplete,
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn fragmented_over_records() {
        let hello = build_client_hello(Some("example.com"));
        let hs = &hello[5..];
        let mut split = Vec::new();
        for chunk in hs.chunks(7) {
            split.extend_from_slice(&[0x16, 0x03, 0x01]);
            split.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
            split.extend_from_slice(chunk);
        }
        assert_eq!(
            parse_client_hello(&split),
            Hello::Complete(Some("example.com".into()))
        );
    }

    #[test]
    fn not_tls() {
        assert_eq!(parse_client_hello(b"GET / HTTP/1.1\r\n"), Hello::NotTls);
        assert_eq!(parse_client_hello(b"SSH-2.0-OpenSSH"), Hello::NotTls);
        assert_eq!(parse_client_hello(&[0x16, 0x01]), Hello::NotTls);
        // A handshake record that is not a ClientHello.
        assert_eq!(
            parse_client_hello(&[0x16, 0x03, 0x01, 0x00, 0x04, 0x02, 0, 0, 0]),
            Hello::NotTls
        );
        // Garbage inside a well-framed ClientHello.
        assert_eq!(
            parse_client_hello(&[0x16, 0x03, 0x01, 0x00, 0x05, 0x01, 0, 0, 1, 0xff]),
            Hello::NotTls
        );
    }
}
