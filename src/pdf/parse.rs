//! Reading a PDF for an incremental update: the checks that decide whether appending is safe.

use super::PdfError;
use lopdf::{Dictionary, Document, Object, ObjectId};

/// How the newest cross-reference section is written (ISO 32000-1 §7.5.4 and §7.5.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XrefKind {
    /// A classic `xref` table (also the newest section of a hybrid-reference file).
    Table,
    /// A cross-reference stream.
    Stream,
}

/// A PDF that passed the checks for appending a revision.
#[derive(Debug)]
pub struct ParsedPdf {
    /// The document as lopdf read it (all revisions merged).
    pub doc: Document,
    /// Offset of the newest cross-reference section (the last `startxref`).
    pub startxref: usize,
    /// Kind of the newest cross-reference section.
    pub xref_kind: XrefKind,
    /// The trailer of the newest section (for xref streams: the stream dictionary).
    pub trailer: Dictionary,
    /// The next free object number (/Size of the newest trailer).
    pub size: u32,
    /// Large streams left out of `doc` (data offset, length), sorted by offset: their
    /// `Stream::content` is empty, the data is in the original bytes.
    pub bulk: Vec<(usize, usize)>,
    /// Problems tolerated when reading leniently (damaged cross-reference data).
    pub warnings: Vec<String>,
}

/// The last `startxref` value of `bytes` and the position of the keyword (ISO 32000-1 §7.5.5).
pub fn find_startxref(bytes: &[u8]) -> Result<(usize, usize), PdfError> {
    let tail_start = bytes.len().saturating_sub(2048);
    let tail = &bytes[tail_start..];
    let eof = rfind(tail, b"%%EOF")
        .ok_or_else(|| PdfError::Truncated("no %%EOF marker at the end".into()))?;
    let kw = rfind(&tail[..eof], b"startxref")
        .ok_or_else(|| PdfError::Truncated("no startxref before the last %%EOF".into()))?;
    let digits: String = tail[kw + 9..eof]
        .iter()
        .map(|&b| b as char)
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    let offset: usize = digits
        .parse()
        .map_err(|_| PdfError::Truncated(format!("startxref value {digits:?} is not a number")))?;
    if offset >= bytes.len() {
        return Err(PdfError::XrefDamaged(format!(
            "startxref {offset} points past the end of the file"
        )));
    }
    Ok((offset, tail_start + kw))
}

pub(crate) fn rfind(hay: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::rfind(hay, needle)
}

pub(crate) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(hay, needle)
}

fn skip_ws(bytes: &[u8], mut i: usize) -> usize {
    while i < bytes.len() && matches!(bytes[i], b' ' | b'\t' | b'\r' | b'\n' | b'\x0c' | 0) {
        i += 1;
    }
    i
}

/// Whether the section at `offset` is a table or a stream; anything else means the offset is wrong.
fn xref_kind_at(bytes: &[u8], offset: usize) -> Result<XrefKind, PdfError> {
    let at = skip_ws(bytes, offset);
    let rest = &bytes[at..bytes.len().min(at + 64)];
    if rest.starts_with(b"xref") {
        return Ok(XrefKind::Table);
    }
    // `N G obj` introducing a cross-reference stream.
    let text = String::from_utf8_lossy(rest);
    let mut parts = text.split_ascii_whitespace();
    let is_obj = parts.next().is_some_and(|p| p.parse::<u32>().is_ok())
        && parts.next().is_some_and(|p| p.parse::<u16>().is_ok())
        && parts.next().is_some_and(|p| p.starts_with("obj"));
    if is_obj {
        Ok(XrefKind::Stream)
    } else {
        Err(PdfError::XrefDamaged(format!(
            "startxref {offset} does not point at a cross-reference section"
        )))
    }
}

impl ParsedPdf {
    /// Parse `bytes`, refusing what cannot safely get an incremental update: not a PDF, empty,
    /// truncated, a wrong startxref, cross-reference data lopdf had to repair, encryption.
    pub fn parse(bytes: &[u8]) -> Result<Self, PdfError> {
        Self::parse_with(bytes, None, true)
    }

    /// Read a document for verification: large streams are left out as in
    /// [`ParsedPdf::parse_lean`], and damaged cross-reference data is tolerated (recorded in
    /// `warnings`) instead of refused, since nothing will be appended.
    pub fn parse_for_reading(bytes: &[u8]) -> Result<Self, PdfError> {
        Self::parse_without_bulk(bytes, false)
    }

    /// Like [`ParsedPdf::parse`], but the data of large streams is never copied into the
    /// document model (signing does not read it), so signing a 20 MB scan does not hold the scan
    /// twice: lopdf reads a same-sized copy of the file in which each large stream is emptied
    /// (its /Length set to 0 in place, so every offset stays valid) and whose emptied pages are
    /// never touched. Image and embedded-file data that is still loaded is dropped as well.
    pub fn parse_lean(bytes: &[u8]) -> Result<Self, PdfError> {
        Self::parse_without_bulk(bytes, true)
    }

    fn parse_without_bulk(bytes: &[u8], strict: bool) -> Result<Self, PdfError> {
        let streams = bulk_streams(bytes);
        let mut parsed = match lean_copy_of(bytes, &streams) {
            Some(lean) => {
                // Checks on the real bytes first, so errors name the real file's problems.
                find_startxref(bytes)?;
                Self::parse_with(&lean, Some(drop_bulk_data), strict)?
            }
            None => Self::parse_with(bytes, Some(drop_bulk_data), strict)?,
        };
        parsed.bulk = streams.iter().map(|s| (s.data, s.len)).collect();
        Ok(parsed)
    }

    fn parse_with(
        bytes: &[u8],
        filter: Option<lopdf::FilterFunc>,
        strict: bool,
    ) -> Result<Self, PdfError> {
        if bytes.is_empty() {
            return Err(PdfError::Empty);
        }
        if find(&bytes[..bytes.len().min(1024)], b"%PDF-").is_none() {
            return Err(PdfError::NotPdf);
        }
        let mut warnings = Vec::new();
        let (startxref, _) = find_startxref(bytes)?;
        let xref_kind = match xref_kind_at(bytes, startxref) {
            Ok(k) => k,
            Err(e) if !strict => {
                warnings.push(e.to_string());
                XrefKind::Table
            }
            Err(e) => return Err(e),
        };
        let options = lopdf::LoadOptions {
            filter,
            ..Default::default()
        };
        let doc = Document::load_mem_with_options(bytes, options).map_err(|e| {
            if find(bytes, b"/Encrypt").is_some() {
                PdfError::Encrypted
            } else {
                PdfError::Malformed(e.to_string())
            }
        })?;
        if let Some(recovery) = doc.xref_recovery {
            let e = PdfError::XrefDamaged(format!("{recovery:?}"));
            if strict {
                return Err(e);
            }
            warnings.push(e.to_string());
        }
        if doc.encryption_state.is_some() || doc.trailer.has(b"Encrypt") {
            return Err(PdfError::Encrypted);
        }
        if doc.xref_start != startxref {
            let e = PdfError::XrefDamaged(format!(
                "startxref {startxref} differs from the section read at {}",
                doc.xref_start
            ));
            if strict {
                return Err(e);
            }
            warnings.push(e.to_string());
        }
        let trailer = doc.trailer.clone();
        let size = trailer
            .get(b"Size")
            .ok()
            .and_then(|s| s.as_i64().ok())
            .and_then(|s| u32::try_from(s).ok())
            .ok_or_else(|| PdfError::Malformed("the trailer has no valid /Size".into()))?;
        let size = size.max(doc.max_id + 1);
        let root = trailer
            .get(b"Root")
            .and_then(Object::as_reference)
            .map_err(|_| PdfError::Malformed("the trailer has no /Root reference".into()))?;
        if doc.get_dictionary(root).is_err() {
            // The trailer names a catalog the cross-reference data does not locate.
            return Err(PdfError::XrefDamaged(format!(
                "catalog {} {} R cannot be read at its recorded offset",
                root.0, root.1
            )));
        }
        Ok(ParsedPdf {
            doc,
            startxref,
            xref_kind,
            trailer,
            size,
            bulk: Vec::new(),
            warnings,
        })
    }

    /// The catalog's object id.
    pub fn root_id(&self) -> ObjectId {
        // `parse` checked /Root is a reference to a dictionary.
        self.trailer
            .get(b"Root")
            .and_then(Object::as_reference)
            .unwrap_or((0, 0))
    }

    /// The catalog dictionary.
    pub fn catalog(&self) -> Result<&Dictionary, PdfError> {
        Ok(self.doc.get_dictionary(self.root_id())?)
    }

    /// Follow a reference (if `obj` is one) to the object it names.
    pub fn resolve<'a>(&'a self, obj: &'a Object) -> Result<&'a Object, PdfError> {
        Ok(self.doc.dereference(obj)?.1)
    }

    /// Page object ids in order.
    pub fn pages(&self) -> Vec<ObjectId> {
        self.doc.get_pages().into_values().collect()
    }

    /// The interactive form dictionary, if any, and the id it lives in when indirect.
    pub fn acro_form(&self) -> Result<Option<(Option<ObjectId>, Dictionary)>, PdfError> {
        let catalog = self.catalog()?;
        match catalog.get(b"AcroForm") {
            Err(_) => Ok(None),
            Ok(Object::Reference(id)) => match self.doc.get_object(*id) {
                Ok(Object::Dictionary(d)) => Ok(Some((Some(*id), d.clone()))),
                _ => Ok(None),
            },
            Ok(Object::Dictionary(d)) => Ok(Some((None, d.clone()))),
            Ok(_) => Err(PdfError::Malformed("/AcroForm is not a dictionary".into())),
        }
    }

    /// All terminal form fields: (fully qualified name, field object id, merged dictionary).
    pub fn fields(&self) -> Result<Vec<(String, ObjectId, Dictionary)>, PdfError> {
        let mut out = Vec::new();
        let Some((_, form)) = self.acro_form()? else {
            return Ok(out);
        };
        let Ok(fields) = form.get(b"Fields") else {
            return Ok(out);
        };
        let fields = self
            .resolve(fields)?
            .as_array()
            .map_err(|_| PdfError::Malformed("/Fields is not an array".into()))?;
        let mut stack: Vec<(String, Object, u32)> = fields
            .iter()
            .rev()
            .map(|f| (String::new(), f.clone(), 0))
            .collect();
        while let Some((prefix, obj, depth)) = stack.pop() {
            if depth > 32 {
                return Err(PdfError::Malformed(
                    "form field tree nested deeper than 32".into(),
                ));
            }
            let Ok(id) = obj.as_reference() else { continue };
            let Ok(dict) = self.doc.get_dictionary(id) else {
                continue;
            };
            let partial = dict
                .get(b"T")
                .ok()
                .and_then(|t| t.as_str().ok())
                .map(decode_text_string);
            let name = match (&partial, prefix.is_empty()) {
                (Some(p), true) => p.clone(),
                (Some(p), false) => format!("{prefix}.{p}"),
                (None, _) => prefix.clone(),
            };
            let kids = dict
                .get(b"Kids")
                .ok()
                .and_then(|k| self.resolve(k).ok())
                .and_then(|k| k.as_array().ok());
            let has_field_kids = kids.is_some_and(|kids| {
                kids.iter().any(|k| {
                    k.as_reference()
                        .ok()
                        .and_then(|id| self.doc.get_dictionary(id).ok())
                        .is_some_and(|d| d.has(b"T"))
                })
            });
            if let (Some(kids), true) = (kids, has_field_kids) {
                for k in kids.iter().rev() {
                    stack.push((name.clone(), k.clone(), depth + 1));
                }
            } else {
                out.push((name, id, dict.clone()));
            }
        }
        Ok(out)
    }

    /// The DocMDP permission level (1, 2 or 3) of a certification signature, if certified
    /// (ISO 32000-1 §12.8.2.2: /Perms /DocMDP and the signature's /Reference /TransformParams /P).
    pub fn docmdp_permission(&self) -> Result<Option<i64>, PdfError> {
        let catalog = self.catalog()?;
        let Ok(perms) = catalog.get(b"Perms") else {
            return Ok(None);
        };
        let Ok(perms) = self.resolve(perms)?.as_dict() else {
            return Ok(None);
        };
        let Ok(sig) = perms.get(b"DocMDP") else {
            return Ok(None);
        };
        let sig = self
            .resolve(sig)?
            .as_dict()
            .map_err(|_| PdfError::Malformed("/Perms /DocMDP is not a dictionary".into()))?;
        let mut level = 2; // ISO 32000-1 Table 254: /P defaults to 2.
        if let Ok(refs) = sig
            .get(b"Reference")
            .and_then(|r| Ok(self.doc.dereference(r)?.1))
            .and_then(Object::as_array)
        {
            for r in refs {
                let Ok(r) = self
                    .resolve(r)
                    .and_then(|r| r.as_dict().map_err(PdfError::from))
                else {
                    continue;
                };
                let method = r
                    .get(b"TransformMethod")
                    .and_then(Object::as_name)
                    .unwrap_or(b"");
                if method == b"DocMDP" {
                    if let Ok(params) = r
                        .get(b"TransformParams")
                        .and_then(|p| Ok(self.doc.dereference(p)?.1))
                        .and_then(Object::as_dict)
                    {
                        if let Ok(p) = params.get(b"P").and_then(Object::as_i64) {
                            level = p;
                        }
                    }
                }
            }
        }
        Ok(Some(level))
    }

    /// Whether any signature field already holds a signature value.
    pub fn has_signatures(&self) -> Result<bool, PdfError> {
        Ok(self.fields()?.iter().any(|(_, _, d)| {
            d.get(b"FT")
                .and_then(Object::as_name)
                .is_ok_and(|ft| ft == b"Sig")
                && d.has(b"V")
        }))
    }
}

/// Streams at least this long are left out of the document model when signing.
const BULK_STREAM: usize = 256 * 1024;

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n' | b'\x0c' | 0)
}

/// A large stream found in the raw bytes: where its data starts, its length, and where the
/// digits of its direct /Length value are.
struct BulkStream {
    data: usize,
    len: usize,
    digits: usize,
    digits_len: usize,
}

/// Find streams of at least [`BULK_STREAM`] bytes whose dictionary has a direct /Length and
/// whose data is followed by `endstream` exactly there (ISO 32000-1 §7.3.8.1).
fn bulk_streams(bytes: &[u8]) -> Vec<BulkStream> {
    let finder = memchr::memmem::Finder::new(b"stream");
    let length_finder = memchr::memmem::FinderRev::new(b"/Length");
    let mut found = Vec::new();
    let mut pos = 0;
    while let Some(i) = finder.find(&bytes[pos..]) {
        let kw = pos + i;
        pos = kw + 6;
        if kw >= 3 && &bytes[kw - 3..kw] == b"end" {
            continue;
        }
        let mut j = kw;
        while j > 0 && is_ws(bytes[j - 1]) {
            j -= 1;
        }
        if j < 2 || &bytes[j - 2..j] != b">>" {
            continue;
        }
        let mut data = kw + 6;
        if bytes.get(data) == Some(&b'\r') {
            data += 1;
        }
        if bytes.get(data) != Some(&b'\n') {
            continue;
        }
        data += 1;
        let window_start = j.saturating_sub(4096);
        let Some(l) = length_finder.rfind(&bytes[window_start..j]) else {
            continue;
        };
        let mut d = window_start + l + 7;
        if bytes.get(d).is_some_and(|b| b.is_ascii_alphanumeric()) {
            continue; // /Length1, /Length2, /LengthX
        }
        while d < j && is_ws(bytes[d]) {
            d += 1;
        }
        let digits_start = d;
        while d < j && bytes[d].is_ascii_digit() {
            d += 1;
        }
        if d == digits_start || d - digits_start > 12 {
            continue;
        }
        let mut after = d;
        while after < j && is_ws(bytes[after]) {
            after += 1;
        }
        if bytes.get(after).is_some_and(u8::is_ascii_digit) {
            continue; // an indirect reference `N G R`
        }
        let Ok(len) = std::str::from_utf8(&bytes[digits_start..d])
            .unwrap_or("x")
            .parse::<usize>()
        else {
            continue;
        };
        if len < BULK_STREAM || data + len > bytes.len() {
            continue;
        }
        let mut end = data + len;
        while end < bytes.len() && end < data + len + 2 && is_ws(bytes[end]) {
            end += 1;
        }
        if !bytes[end..].starts_with(b"endstream") {
            continue;
        }
        found.push(BulkStream {
            data,
            len,
            digits: digits_start,
            digits_len: d - digits_start,
        });
        pos = end + 9;
    }
    found
}

/// A copy of `bytes` with every bulk stream emptied in place, or `None` when there is none.
/// The copy is zero-allocated and the emptied regions are never written, so the kernel backs
/// them with no memory.
fn lean_copy_of(bytes: &[u8], streams: &[BulkStream]) -> Option<Vec<u8>> {
    if streams.is_empty() {
        return None;
    }
    let mut lean = vec![0u8; bytes.len()];
    let mut copied = 0;
    for s in streams {
        lean[copied..s.data].copy_from_slice(&bytes[copied..s.data]);
        // `/Length 20971520` becomes `/Length 0       `.
        lean[s.digits] = b'0';
        lean[s.digits + 1..s.digits + s.digits_len].fill(b' ');
        // The byte after `endobj` is not white space, so a parser skipping white space after
        // the object stops there instead of running through the zeroed (NUL = white space) data.
        let marker = b"endstream\nendobj\n%\n~";
        let n = marker.len().min(s.len);
        lean[s.data..s.data + n].copy_from_slice(&marker[..n]);
        copied = s.data + s.len;
    }
    lean[copied..].copy_from_slice(&bytes[copied..]);
    Some(lean)
}

/// Load filter that replaces the data of image and embedded-file streams by one byte.
///
/// lopdf keeps the object it passed in (modified in place) for top-level objects, and the
/// returned one for objects inside object streams, which are never streams themselves.
fn drop_bulk_data(id: ObjectId, object: &mut Object) -> Option<(ObjectId, Object)> {
    match object {
        Object::Stream(stream) => {
            let bulky = stream
                .dict
                .get(b"Subtype")
                .and_then(Object::as_name)
                .is_ok_and(|s| s == b"Image")
                || stream
                    .dict
                    .get(b"Type")
                    .and_then(Object::as_name)
                    .is_ok_and(|t| t == b"EmbeddedFile");
            if bulky && stream.content.len() > 1 {
                stream.content = vec![0];
            }
            Some((id, Object::Null))
        }
        other => Some((id, other.clone())),
    }
}

/// Decode a PDF text string (ISO 32000-1 §7.9.2.2): UTF-16BE with a BOM, else PDFDocEncoding
/// (read as Latin-1, which agrees on the printable range).
pub fn decode_text_string(bytes: &[u8]) -> String {
    if bytes.len() >= 2 && bytes[0] == 0xFE && bytes[1] == 0xFF {
        let units: Vec<u16> = bytes[2..]
            .chunks(2)
            .filter(|c| c.len() == 2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .collect();
        String::from_utf16_lossy(&units)
    } else {
        bytes.iter().map(|&b| b as char).collect()
    }
}
