//! Locating the signatures of a PDF for verification (ISO 32000-1 §12.8.1): each signature
//! field's signature dictionary, its /ByteRange checked against the file, and the /Contents
//! read from the bytes the ByteRange leaves out.

use super::PdfError;
use super::parse::ParsedPdf;
use lopdf::{Dictionary, Object, ObjectId};

/// Kind of signature dictionary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureKind {
    /// A signature (`/Type /Sig`, or no /Type).
    Signature,
    /// A document time-stamp (`/Type /DocTimeStamp`, SubFilter ETSI.RFC3161).
    DocTimeStamp,
}

/// A ByteRange that passed the structural checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub gap_start: usize,
    pub gap_end: usize,
    /// End of the signed revision (offset of the byte after the second range).
    pub end: usize,
}

/// One signature as found in the file, before any cryptography.
#[derive(Debug, Clone)]
pub struct FoundSignature {
    pub field: String,
    pub kind: SignatureKind,
    pub dict_id: Option<ObjectId>,
    pub subfilter: String,
    /// The checked ByteRange, or why it is unacceptable.
    pub byte_range: Result<ByteRange, String>,
    /// The DER/BER bytes of /Contents (with any zero padding), or why they cannot be read.
    pub contents: Result<Vec<u8>, String>,
    /// /M as written.
    pub claimed_time: Option<String>,
    pub name: Option<String>,
    pub reason: Option<String>,
    pub location: Option<String>,
    /// /P of a DocMDP transform in /Reference (a certification signature).
    pub docmdp: Option<i64>,
}

/// The most /Contents bytes read (as hex: twice that).
pub const MAX_CONTENTS: usize = 16 << 20;

fn text(d: &Dictionary, key: &[u8]) -> Option<String> {
    d.get(key)
        .ok()
        .and_then(|o| o.as_str().ok())
        .map(super::parse::decode_text_string)
}

/// Check ByteRange `[0 a b c]` against the file (ISO 32000-1 §12.8.1, EN 319 142-1 §5.4): it
/// starts at 0, the gap is exactly one hex string `<…>` of hex digits, and the second range
/// ends inside the file.
fn check_byte_range(bytes: &[u8], dict: &Dictionary) -> Result<ByteRange, String> {
    let arr = dict
        .get(b"ByteRange")
        .map_err(|_| "no /ByteRange".to_string())?;
    let arr = arr
        .as_array()
        .map_err(|_| "/ByteRange is not an array".to_string())?;
    let v: Vec<i64> = arr
        .iter()
        .map(|o| {
            o.as_i64()
                .map_err(|_| "/ByteRange holds a non-integer".to_string())
        })
        .collect::<Result<_, _>>()?;
    let [s0, l0, s1, l1] =
        <[i64; 4]>::try_from(v).map_err(|_| "/ByteRange does not have 4 numbers".to_string())?;
    if s0 != 0 || l0 <= 0 || s1 <= l0 || l1 < 0 {
        return Err(format!(
            "/ByteRange [{s0} {l0} {s1} {l1}] does not start at 0 with one gap"
        ));
    }
    let (gap_start, gap_end) = (l0 as usize, s1 as usize);
    let end = (s1 as u128 + l1 as u128) as usize;
    if end > bytes.len() || gap_end > bytes.len() {
        return Err(format!(
            "/ByteRange [{s0} {l0} {s1} {l1}] reaches past the end of the file ({} bytes)",
            bytes.len()
        ));
    }
    let gap = &bytes[gap_start..gap_end];
    if gap.len() < 2
        || gap[0] != b'<'
        || gap[gap.len() - 1] != b'>'
        || !gap[1..gap.len() - 1].iter().all(u8::is_ascii_hexdigit)
    {
        return Err("the /ByteRange gap is not exactly the /Contents hex string".into());
    }
    Ok(ByteRange {
        gap_start,
        gap_end,
        end,
    })
}

fn decode_hex(hex: &[u8]) -> Vec<u8> {
    let val = |c: u8| match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        _ => c - b'A' + 10,
    };
    hex.chunks(2)
        .map(|p| (val(p[0]) << 4) | p.get(1).map(|&c| val(c)).unwrap_or(0))
        .collect()
}

fn read_signature(
    pdf: &ParsedPdf,
    bytes: &[u8],
    field: String,
    dict_id: Option<ObjectId>,
    dict: &Dictionary,
) -> FoundSignature {
    let kind = match dict.get(b"Type").and_then(Object::as_name) {
        Ok(b"DocTimeStamp") => SignatureKind::DocTimeStamp,
        _ => SignatureKind::Signature,
    };
    let subfilter = dict
        .get(b"SubFilter")
        .and_then(Object::as_name)
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .unwrap_or_default();
    let byte_range = check_byte_range(bytes, dict);
    let contents = match (&byte_range, dict.has(b"Contents")) {
        (_, false) => Err("no /Contents".to_string()),
        (Ok(br), true) => {
            let hex = &bytes[br.gap_start + 1..br.gap_end - 1];
            if hex.len() / 2 > MAX_CONTENTS {
                Err(format!(
                    "/Contents is larger than {} MB",
                    MAX_CONTENTS >> 20
                ))
            } else {
                Ok(decode_hex(hex))
            }
        }
        (Err(_), true) => match dict.get(b"Contents").and_then(Object::as_str) {
            Ok(s) if s.len() <= MAX_CONTENTS => Ok(s.to_vec()),
            Ok(_) => Err(format!(
                "/Contents is larger than {} MB",
                MAX_CONTENTS >> 20
            )),
            Err(_) => Err("/Contents is not a string".into()),
        },
    };
    let mut docmdp = None;
    if let Ok(refs) = dict
        .get(b"Reference")
        .and_then(|r| Ok(pdf.doc.dereference(r)?.1))
        .and_then(Object::as_array)
    {
        for r in refs {
            let Ok(r) = pdf
                .doc
                .dereference(r)
                .map(|x| x.1)
                .and_then(Object::as_dict)
            else {
                continue;
            };
            if r.get(b"TransformMethod")
                .and_then(Object::as_name)
                .is_ok_and(|m| m == b"DocMDP")
            {
                let p = r
                    .get(b"TransformParams")
                    .and_then(|p| Ok(pdf.doc.dereference(p)?.1))
                    .and_then(Object::as_dict)
                    .ok()
                    .and_then(|p| p.get(b"P").and_then(Object::as_i64).ok())
                    .unwrap_or(2);
                docmdp = Some(p);
            }
        }
    }
    FoundSignature {
        field,
        kind,
        dict_id,
        subfilter,
        byte_range,
        contents,
        claimed_time: text(dict, b"M"),
        name: text(dict, b"Name"),
        reason: text(dict, b"Reason"),
        location: text(dict, b"Location"),
        docmdp,
    }
}

/// Every signed signature field of the document, ordered by the position of the revision they
/// sign (document order: oldest first).
pub fn find_signatures(pdf: &ParsedPdf, bytes: &[u8]) -> Result<Vec<FoundSignature>, PdfError> {
    let mut found = Vec::new();
    for (name, _, field) in pdf.fields()? {
        if !field
            .get(b"FT")
            .and_then(Object::as_name)
            .is_ok_and(|ft| ft == b"Sig")
        {
            continue;
        }
        let Ok(v) = field.get(b"V") else { continue };
        let (dict_id, dict) = match v {
            Object::Reference(id) => match pdf.doc.get_dictionary(*id) {
                Ok(d) => (Some(*id), d.clone()),
                Err(_) => continue,
            },
            Object::Dictionary(d) => (None, d.clone()),
            _ => continue,
        };
        found.push(read_signature(pdf, bytes, name, dict_id, &dict));
    }
    found.sort_by_key(|s| s.byte_range.as_ref().map(|b| b.end).unwrap_or(usize::MAX));
    Ok(found)
}

/// Offsets just past each `%%EOF` marker (and its end-of-line): the ends of the revisions.
pub fn revision_ends(bytes: &[u8]) -> Vec<usize> {
    let mut ends = Vec::new();
    for pos in memchr::memmem::find_iter(bytes, b"%%EOF") {
        let mut end = pos + 5;
        if bytes.get(end) == Some(&b'\r') {
            end += 1;
        }
        if bytes.get(end) == Some(&b'\n') {
            end += 1;
        }
        ends.push(end);
    }
    ends
}
