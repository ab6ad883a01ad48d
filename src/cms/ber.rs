//! BER to DER (X.690 §10) for CMS read from signed PDFs: indefinite lengths become definite,
//! non-minimal lengths minimal, and constructed OCTET STRINGs primitive. Other producers
//! (OpenSSL's `-stream`, older Java and .NET stacks) write BER, which the `der` crate refuses.

/// Why bytes are not a BER value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BerError {
    #[error("truncated at byte {0}")]
    Truncated(usize),
    #[error("invalid length at byte {0}")]
    Length(usize),
    #[error("nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("indefinite length on a primitive value at byte {0}")]
    IndefinitePrimitive(usize),
}

const MAX_DEPTH: usize = 64;

/// A parsed header: tag bytes end, constructed flag, length (None = indefinite), content start.
struct Header {
    tag: Vec<u8>,
    constructed: bool,
    len: Option<usize>,
    content: usize,
}

fn header(input: &[u8], pos: usize) -> Result<Header, BerError> {
    let first = *input.get(pos).ok_or(BerError::Truncated(pos))?;
    let mut i = pos + 1;
    if first & 0x1f == 0x1f {
        loop {
            let b = *input.get(i).ok_or(BerError::Truncated(i))?;
            i += 1;
            if i - pos > 6 {
                return Err(BerError::Length(pos));
            }
            if b & 0x80 == 0 {
                break;
            }
        }
    }
    let tag = input[pos..i].to_vec();
    let l = *input.get(i).ok_or(BerError::Truncated(i))?;
    i += 1;
    let len = if l < 0x80 {
        Some(usize::from(l))
    } else if l == 0x80 {
        None
    } else {
        let n = usize::from(l & 0x7f);
        if n > 8 {
            return Err(BerError::Length(i - 1));
        }
        let bytes = input.get(i..i + n).ok_or(BerError::Truncated(i))?;
        i += n;
        let mut v: usize = 0;
        for &b in bytes {
            v = v
                .checked_mul(256)
                .and_then(|v| v.checked_add(usize::from(b)))
                .ok_or(BerError::Length(i))?;
        }
        Some(v)
    };
    if let Some(len) = len {
        if i.checked_add(len).is_none_or(|end| end > input.len()) {
            return Err(BerError::Truncated(i));
        }
    }
    Ok(Header {
        tag,
        constructed: first & 0x20 != 0,
        len,
        content: i,
    })
}

fn push_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().position(|&b| b != 0).unwrap_or(7);
        out.push(0x80 | (8 - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
}

/// Normalize the value at `pos`; returns its DER encoding and the position after it.
fn value(input: &[u8], pos: usize, depth: usize) -> Result<(Vec<u8>, usize), BerError> {
    if depth > MAX_DEPTH {
        return Err(BerError::TooDeep);
    }
    let h = header(input, pos)?;
    if !h.constructed {
        let len = h.len.ok_or(BerError::IndefinitePrimitive(pos))?;
        let mut out = h.tag.clone();
        push_len(&mut out, len);
        out.extend_from_slice(&input[h.content..h.content + len]);
        return Ok((out, h.content + len));
    }
    // Constructed: normalize each child.
    let mut children = Vec::new();
    let mut i = h.content;
    let end = match h.len {
        Some(len) => {
            let end = h.content + len;
            while i < end {
                let (child, next) = value(&input[..end], i, depth + 1)?;
                children.push(child);
                i = next;
            }
            end
        }
        None => loop {
            if input.get(i..i + 2).ok_or(BerError::Truncated(i))? == [0, 0] {
                break i + 2;
            }
            let (child, next) = value(input, i, depth + 1)?;
            children.push(child);
            i = next;
        },
    };
    let mut out;
    if h.tag == [0x24] {
        // Constructed OCTET STRING: concatenate the segments' contents (X.690 §10.2).
        out = vec![0x04];
        let mut content = Vec::new();
        for c in &children {
            let ch = header(c, 0)?;
            content.extend_from_slice(&c[ch.content..]);
        }
        push_len(&mut out, content.len());
        out.extend_from_slice(&content);
    } else {
        out = h.tag.clone();
        let len: usize = children.iter().map(Vec::len).sum();
        push_len(&mut out, len);
        for c in children {
            out.extend_from_slice(&c);
        }
    }
    Ok((out, end))
}

/// The length of the first TLV in `input` when it is definite-length (DER's case), without
/// normalizing; `None` when it is indefinite or malformed.
pub fn definite_len(input: &[u8]) -> Option<usize> {
    let h = header(input, 0).ok()?;
    Some(h.content + h.len?)
}

/// DER for the first BER value in `input`; bytes after it (e.g. zero padding) are ignored.
pub fn to_der(input: &[u8]) -> Result<Vec<u8>, BerError> {
    value(input, 0, 0).map(|(v, _)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indefinite_lengths_become_definite() {
        // SEQUENCE (indefinite) { INTEGER 5, OCTET STRING (constructed, indefinite) { "ab", "c" } }
        let ber = [
            0x30, 0x80, 0x02, 0x01, 0x05, 0x24, 0x80, 0x04, 0x02, b'a', b'b', 0x04, 0x01, b'c', 0,
            0, 0, 0, 0, 0,
        ];
        let der = to_der(&ber).unwrap();
        assert_eq!(
            der,
            [0x30, 0x08, 0x02, 0x01, 0x05, 0x04, 0x03, b'a', b'b', b'c']
        );
    }

    #[test]
    fn non_minimal_lengths_are_normalized_and_padding_ignored() {
        let ber = [0x04, 0x82, 0x00, 0x02, 1, 2, 0, 0, 0];
        assert_eq!(to_der(&ber).unwrap(), [0x04, 0x02, 1, 2]);
        assert_eq!(definite_len(&ber), Some(6));
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        for bad in [
            &[][..],
            &[0x30],
            &[0x30, 0x80],
            &[0x30, 0x85, 1, 2, 3, 4, 5],
            &[0x04, 0x80, 0, 0],
            &[
                0x30, 0x89, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            ],
        ] {
            assert!(to_der(bad).is_err(), "{bad:?}");
        }
        let mut deep = vec![];
        for _ in 0..100 {
            deep.extend_from_slice(&[0x30, 0x80]);
        }
        assert!(to_der(&deep).is_err());
    }
}
