//! Applying a PAdES signature (ETSI EN 319 142-1 §5, ISO 32000-1 §12.8) as an incremental update.
//!
//! The signature dictionary is written with `/ByteRange` and `/Contents` placeholders of fixed
//! width; after the revision is appended, ByteRange is patched in place, the two covered ranges
//! are hashed, and the CMS is written as hex into the reserved zeros. The original bytes are
//! never changed, so earlier signatures stay valid.

use super::PdfError;
use super::anchor::find_anchor;
pub use super::appearance::StampText;
use super::appearance::{attach_image, image_stamp, initials_stamp, signature_stamp};
use super::image::StampImage;
use super::parse::ParsedPdf;
use super::writer::{RevisionWriter, serialize};
use crate::clock::Clock;
use crate::cms::{TimeStamper, build_pades_cms};
use crate::keys::Signer;
use lopdf::{Dictionary, Object, ObjectId, StringFormat};
use time::{OffsetDateTime, UtcOffset};

/// DocMDP permission of a certification signature (ISO 32000-1 Table 254, /P).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Certification {
    /// P=1: no changes at all, not even further signatures.
    NoChanges = 1,
    /// P=2: form filling and signing.
    FormFill = 2,
    /// P=3: form filling, signing and annotations.
    Annotate = 3,
}

/// Where a visible stamp goes.
#[derive(Debug, Clone, PartialEq)]
pub enum Placement {
    /// 1-based page and a rectangle `[x, y, width, height]` in default user space (points).
    Rect { page: u32, rect: [f32; 4] },
    /// Over the first occurrence of anchor text (e.g. `${ttd}`); the stamp's top-left corner sits
    /// at the anchor's top-left and the stamp covers it. Size defaults to the stamp's default.
    Anchor {
        text: String,
        size: Option<(f32, f32)>,
    },
}

/// Whether and how the signature shows on the page.
#[derive(Debug, Clone)]
pub enum Visibility {
    /// No appearance: a zero rectangle widget on the first page (ISO 32000-1 §12.7.4.5).
    Invisible,
    /// The full stamp (name, title, NIP, time, QR, footer).
    Stamp {
        placement: Placement,
        text: StampText,
    },
    /// A reviewer's small initials stamp (paraf).
    Initials {
        placement: Placement,
        initials: String,
    },
    /// An image supplied by the signer (e.g. a handwritten-signature specimen), fitted into
    /// the placement's rectangle.
    Image {
        placement: Placement,
        image: std::sync::Arc<StampImage>,
    },
}

/// Time zone used for /M and the stamp's displayed time.
#[derive(Debug, Clone)]
pub struct DisplayZone {
    pub offset: UtcOffset,
    /// Label printed after the time, e.g. "WIB".
    pub label: String,
}

impl Default for DisplayZone {
    /// Western Indonesia Time (Asia/Jakarta, UTC+7, no daylight saving).
    fn default() -> Self {
        DisplayZone {
            offset: UtcOffset::from_hms(7, 0, 0).expect("+07:00 is a valid offset"),
            label: "WIB".into(),
        }
    }
}

impl DisplayZone {
    /// Parse `Asia/Jakarta`, `WIB`, `Asia/Makassar`, `WITA`, `Asia/Jayapura`, `WIT`, `UTC` or `±HH:MM`.
    pub fn parse(name: &str) -> Result<Self, String> {
        let (h, label) = match name {
            "Asia/Jakarta" | "Asia/Pontianak" | "WIB" => (7, "WIB"),
            "Asia/Makassar" | "WITA" => (8, "WITA"),
            "Asia/Jayapura" | "WIT" => (9, "WIT"),
            "UTC" | "Z" => (0, "UTC"),
            other => {
                let sign = match other.as_bytes().first() {
                    Some(b'+') => 1,
                    Some(b'-') => -1,
                    _ => return Err(format!("unknown time zone {other:?}")),
                };
                let (hh, mm) = other[1..]
                    .split_once(':')
                    .ok_or_else(|| format!("time zone {other:?} is not ±HH:MM"))?;
                let hh: i8 = hh
                    .parse()
                    .map_err(|_| format!("time zone {other:?} is not ±HH:MM"))?;
                let mm: i8 = mm
                    .parse()
                    .map_err(|_| format!("time zone {other:?} is not ±HH:MM"))?;
                let offset =
                    UtcOffset::from_hms(sign * hh, sign * mm, 0).map_err(|e| e.to_string())?;
                return Ok(DisplayZone {
                    offset,
                    label: format!("UTC{other}"),
                });
            }
        };
        Ok(DisplayZone {
            offset: UtcOffset::from_hms(h, 0, 0).map_err(|e| e.to_string())?,
            label: label.into(),
        })
    }

    /// "23 November 2026 10:15:30 WIB".
    pub fn format(&self, t: OffsetDateTime) -> String {
        const MONTHS: [&str; 12] = [
            "Januari",
            "Februari",
            "Maret",
            "April",
            "Mei",
            "Juni",
            "Juli",
            "Agustus",
            "September",
            "Oktober",
            "November",
            "Desember",
        ];
        let t = t.to_offset(self.offset);
        format!(
            "{} {} {} {:02}:{:02}:{:02} {}",
            t.day(),
            MONTHS[usize::from(u8::from(t.month())) - 1],
            t.year(),
            t.hour(),
            t.minute(),
            t.second(),
            self.label
        )
    }
}

/// PDF date string (ISO 32000-1 §7.9.4): `D:YYYYMMDDHHmmSS+HH'mm'`.
pub fn pdf_date(t: OffsetDateTime, offset: UtcOffset) -> String {
    let t = t.to_offset(offset);
    let (oh, om, _) = offset.as_hms();
    let sign = if offset.is_negative() { '-' } else { '+' };
    format!(
        "D:{:04}{:02}{:02}{:02}{:02}{:02}{sign}{:02}'{:02}'",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        oh.unsigned_abs(),
        om.unsigned_abs()
    )
}

/// A PDF text string: PDFDocEncoding-compatible ASCII as a literal, anything else UTF-16BE.
pub fn text_string(s: &str) -> Object {
    if s.chars().all(|c| (' '..='~').contains(&c)) {
        Object::String(s.as_bytes().to_vec(), StringFormat::Literal)
    } else {
        let mut bytes = vec![0xFE, 0xFF];
        for unit in s.encode_utf16() {
            bytes.extend_from_slice(&unit.to_be_bytes());
        }
        Object::String(bytes, StringFormat::Hexadecimal)
    }
}

/// What to sign and how.
pub struct SignRequest<'a> {
    /// Field name; a fresh `SignatureN` when absent. An existing empty signature field of this
    /// name is filled instead of creating one.
    pub field_name: Option<String>,
    pub reason: Option<String>,
    pub location: Option<String>,
    pub contact_info: Option<String>,
    /// /Name of the signature dictionary (the signer's name as claimed).
    pub signer_name: Option<String>,
    pub visibility: Visibility,
    pub certify: Option<Certification>,
    /// Adds a signature time-stamp (PAdES B-T) when present.
    pub timestamper: Option<&'a dyn TimeStamper>,
    pub zone: DisplayZone,
}

impl Default for SignRequest<'_> {
    fn default() -> Self {
        SignRequest {
            field_name: None,
            reason: None,
            location: None,
            contact_info: None,
            signer_name: None,
            visibility: Visibility::Invisible,
            certify: None,
            timestamper: None,
            zone: DisplayZone::default(),
        }
    }
}

/// A signed document and facts about the signature just added.
#[derive(Debug, Clone)]
pub struct SignedPdf {
    pub bytes: Vec<u8>,
    pub field_name: String,
    pub byte_range: [usize; 4],
    pub signing_time: OffsetDateTime,
    /// Size of the CMS and of the space reserved for it, in bytes.
    pub cms_len: usize,
    pub reserved: usize,
}

/// Default stamp sizes in points.
pub const STAMP_SIZE: (f32, f32) = (240.0, 100.0);
pub const INITIALS_SIZE: (f32, f32) = (60.0, 30.0);

fn page_media_box(pdf: &ParsedPdf, page_id: ObjectId) -> [f32; 4] {
    let mut id = Some(page_id);
    for _ in 0..32 {
        let Some(cur) = id else { break };
        let Ok(dict) = pdf.doc.get_dictionary(cur) else {
            break;
        };
        if let Ok(mb) = dict
            .get(b"MediaBox")
            .and_then(|m| Ok(pdf.doc.dereference(m)?.1))
            .and_then(Object::as_array)
        {
            let v: Vec<f32> = mb.iter().map(|o| o.as_float().unwrap_or(0.0)).collect();
            if v.len() == 4 {
                return [
                    v[0].min(v[2]),
                    v[1].min(v[3]),
                    v[0].max(v[2]),
                    v[1].max(v[3]),
                ];
            }
        }
        id = dict.get(b"Parent").and_then(Object::as_reference).ok();
    }
    [0.0, 0.0, 595.0, 842.0]
}

/// Resolve a placement to (page id, [llx, lly, urx, ury]).
fn place(
    pdf: &ParsedPdf,
    placement: &Placement,
    default: (f32, f32),
) -> Result<(ObjectId, [f32; 4]), PdfError> {
    let pages = pdf.pages();
    match placement {
        Placement::Rect { page, rect } => {
            let [x, y, w, h] = *rect;
            if !(w > 0.0 && h > 0.0 && x.is_finite() && y.is_finite()) {
                return Err(PdfError::Placement(format!(
                    "rectangle {rect:?} needs a positive width and height"
                )));
            }
            let id = *pages
                .get((*page as usize).wrapping_sub(1))
                .ok_or(PdfError::NoSuchPage {
                    page: *page,
                    count: pages.len(),
                })?;
            Ok((id, [x, y, x + w, y + h]))
        }
        Placement::Anchor { text, size } => {
            let hit =
                find_anchor(pdf, text).ok_or_else(|| PdfError::AnchorNotFound(text.clone()))?;
            let (w, h) = size.unwrap_or(default);
            let w = w.max(hit.x_end - hit.x + 4.0);
            let top = hit.y + hit.size + 2.0;
            let mut llx = hit.x - 2.0;
            let mb = page_media_box(pdf, hit.page_id);
            if llx + w > mb[2] {
                llx = (mb[2] - w).max(mb[0]);
            }
            let lly = (top - h).max(mb[1]);
            Ok((hit.page_id, [llx, lly, llx + w, lly + h]))
        }
    }
}

fn rect_object(r: [f32; 4]) -> Object {
    Object::Array(
        r.iter()
            .map(|v| Object::Real((v * 100.0).round() / 100.0))
            .collect(),
    )
}

fn name(s: &str) -> Object {
    Object::Name(s.as_bytes().to_vec())
}

fn fresh_field_name(existing: &[String]) -> String {
    (1..)
        .map(|i| format!("Signature{i}"))
        .find(|n| !existing.contains(n))
        .unwrap_or_default()
}

/// The parts of the revision that do not depend on the /Contents size.
struct Plan {
    field_name: String,
    /// Existing empty field to fill, or None to create a new one.
    existing_field: Option<(ObjectId, Dictionary)>,
    page_id: ObjectId,
    rect: [f32; 4],
    appearance: Option<lopdf::Stream>,
}

fn plan(pdf: &ParsedPdf, req: &SignRequest, now: OffsetDateTime) -> Result<Plan, PdfError> {
    let docmdp = pdf.docmdp_permission()?;
    if docmdp == Some(1) {
        return Err(PdfError::CertifiedNoChanges);
    }
    if req.certify.is_some() && pdf.has_signatures()? {
        return Err(PdfError::CertifyAfterSignature);
    }
    let fields = pdf.fields()?;
    let names: Vec<String> = fields.iter().map(|(n, _, _)| n.clone()).collect();
    let mut existing_field = None;
    let field_name = match &req.field_name {
        Some(n) if n.is_empty() || n.contains('.') => {
            return Err(PdfError::Placement(format!(
                "field name {n:?} must be non-empty and contain no '.'"
            )));
        }
        Some(n) => {
            if let Some((_, id, dict)) = fields.iter().find(|(fname, _, _)| fname == n) {
                let is_sig = dict
                    .get(b"FT")
                    .and_then(Object::as_name)
                    .is_ok_and(|ft| ft == b"Sig");
                if !is_sig {
                    return Err(PdfError::Placement(format!(
                        "field {n:?} exists and is not a signature field"
                    )));
                }
                if dict.has(b"V") {
                    return Err(PdfError::FieldSigned(n.clone()));
                }
                if dict.has(b"Kids") {
                    return Err(PdfError::Placement(format!(
                        "field {n:?} has separate widgets; not supported"
                    )));
                }
                existing_field = Some((*id, dict.clone()));
            }
            n.clone()
        }
        None => fresh_field_name(&names),
    };
    let pages = pdf.pages();
    let first_page = *pages
        .first()
        .ok_or_else(|| PdfError::Malformed("the document has no pages".into()))?;

    if let Some((_, dict)) = &existing_field {
        // The field's own widget decides where it shows.
        let page_id = dict
            .get(b"P")
            .and_then(Object::as_reference)
            .unwrap_or(first_page);
        let rect: Vec<f32> = dict
            .get(b"Rect")
            .and_then(Object::as_array)
            .map(|a| a.iter().map(|o| o.as_float().unwrap_or(0.0)).collect())
            .unwrap_or_default();
        let rect = if rect.len() == 4 {
            [
                rect[0].min(rect[2]),
                rect[1].min(rect[3]),
                rect[0].max(rect[2]),
                rect[1].max(rect[3]),
            ]
        } else {
            [0.0; 4]
        };
        let (w, h) = (rect[2] - rect[0], rect[3] - rect[1]);
        let appearance = match &req.visibility {
            Visibility::Invisible => None,
            _ if w <= 0.0 || h <= 0.0 => None,
            Visibility::Stamp { text, .. } => {
                Some(signature_stamp(&filled_text(text, req, now), w, h)?)
            }
            Visibility::Initials { initials, .. } => {
                Some(initials_stamp(initials, &short_date(req, now), w, h)?)
            }
            Visibility::Image { image, .. } => Some(image_stamp(image, w, h)?),
        };
        return Ok(Plan {
            field_name,
            existing_field,
            page_id,
            rect,
            appearance,
        });
    }

    // ISO 32000-1 §12.8.2.2.2: after certification only the existing fields may be signed; a new
    // visible field could hide content, so validators (pyHanko, Acrobat) reject it. A new
    // invisible signature field changes nothing on the page and is accepted.
    if let (Some(level), false) = (docmdp, matches!(req.visibility, Visibility::Invisible)) {
        return Err(PdfError::CertifiedNewVisibleField(level));
    }
    let (page_id, rect, appearance) = match &req.visibility {
        Visibility::Invisible => (first_page, [0.0; 4], None),
        Visibility::Stamp { placement, text } => {
            let (page, rect) = place(pdf, placement, STAMP_SIZE)?;
            let ap = signature_stamp(
                &filled_text(text, req, now),
                rect[2] - rect[0],
                rect[3] - rect[1],
            )?;
            (page, rect, Some(ap))
        }
        Visibility::Initials {
            placement,
            initials,
        } => {
            let (page, rect) = place(pdf, placement, INITIALS_SIZE)?;
            let ap = initials_stamp(
                initials,
                &short_date(req, now),
                rect[2] - rect[0],
                rect[3] - rect[1],
            )?;
            (page, rect, Some(ap))
        }
        Visibility::Image { placement, image } => {
            // Without a size, the image fills as much of the default stamp box as its
            // aspect ratio allows.
            let (iw, ih) = (image.width() as f32, image.height() as f32);
            let scale = (STAMP_SIZE.0 / iw).min(STAMP_SIZE.1 / ih);
            let default = (iw * scale, ih * scale);
            let (page, rect) = place(pdf, placement, default)?;
            let ap = image_stamp(image, rect[2] - rect[0], rect[3] - rect[1])?;
            (page, rect, Some(ap))
        }
    };
    Ok(Plan {
        field_name,
        existing_field,
        page_id,
        rect,
        appearance,
    })
}

fn filled_text(text: &StampText, req: &SignRequest, now: OffsetDateTime) -> StampText {
    let mut t = text.clone();
    if t.time_text.is_empty() {
        t.time_text = req.zone.format(now);
    }
    t
}

fn short_date(req: &SignRequest, now: OffsetDateTime) -> String {
    let t = now.to_offset(req.zone.offset);
    format!("{:02}/{:02}/{}", t.day(), u8::from(t.month()), t.year())
}

/// Offsets inside the appended revision that the signature step needs.
struct Layout {
    contents_start: usize,
    contents_end: usize,
    byte_range_at: usize,
    byte_range_len: usize,
}

const BYTE_RANGE_PLACEHOLDER: &str = "[0 0000000000 0000000000 0000000000]";

/// Append the revision to `out` (holding the original file) with `reserved` bytes for the CMS.
fn write_revision(
    pdf: &ParsedPdf,
    plan: &Plan,
    req: &SignRequest,
    now: OffsetDateTime,
    reserved: usize,
    out: &mut Vec<u8>,
) -> Result<Layout, PdfError> {
    let mut w = RevisionWriter::new(pdf);
    let sig_id = w.allocate();

    // Signature dictionary (ISO 32000-1 Table 252), serialized by hand around the placeholders.
    let mut sig = Dictionary::new();
    sig.set("Type", name("Sig"));
    sig.set("Filter", name("Adobe.PPKLite"));
    sig.set("SubFilter", name("ETSI.CAdES.detached"));
    sig.set(
        "M",
        Object::String(
            pdf_date(now, req.zone.offset).into_bytes(),
            StringFormat::Literal,
        ),
    );
    for (key, value) in [
        ("Name", &req.signer_name),
        ("Reason", &req.reason),
        ("Location", &req.location),
        ("ContactInfo", &req.contact_info),
    ] {
        if let Some(v) = value {
            sig.set(key, text_string(v));
        }
    }
    let mut app = Dictionary::new();
    app.set("Name", name("Segel"));
    app.set(
        "REx",
        Object::String(
            env!("CARGO_PKG_VERSION").as_bytes().to_vec(),
            StringFormat::Literal,
        ),
    );
    let mut build = Dictionary::new();
    build.set("App", Object::Dictionary(app));
    sig.set("Prop_Build", Object::Dictionary(build));
    if let Some(level) = req.certify {
        // ISO 32000-1 §12.8.2.2: a signature reference with the DocMDP transform method.
        let mut params = Dictionary::new();
        params.set("Type", name("TransformParams"));
        params.set("P", Object::Integer(level as i64));
        params.set("V", name("1.2"));
        let mut sigref = Dictionary::new();
        sigref.set("Type", name("SigRef"));
        sigref.set("TransformMethod", name("DocMDP"));
        sigref.set("TransformParams", Object::Dictionary(params));
        sig.set("Reference", Object::Array(vec![Object::Dictionary(sigref)]));
    }
    let mut body = serialize(&Object::Dictionary(sig));
    body.truncate(body.len() - 2); // drop the closing ">>"
    body.extend_from_slice(b"/ByteRange ");
    let byte_range_rel = body.len();
    body.extend_from_slice(BYTE_RANGE_PLACEHOLDER.as_bytes());
    body.extend_from_slice(b"/Contents ");
    let contents_rel = body.len();
    body.push(b'<');
    body.resize(body.len() + 2 * reserved, b'0');
    body.extend_from_slice(b">>>");
    w.put_raw(sig_id, body);

    // Appearance stream.
    let ap_ref = plan.appearance.as_ref().map(|ap| {
        let mut ap = ap.clone();
        if let Visibility::Image { image, .. } = &req.visibility {
            let image_id = image.write_objects(|obj| {
                let id = w.allocate();
                w.put(id, &obj);
                id
            });
            attach_image(&mut ap, image_id);
        }
        let id = w.allocate();
        w.put(id, &Object::Stream(ap));
        id
    });
    let mut ap_dict = Dictionary::new();
    if let Some(id) = ap_ref {
        ap_dict.set("N", Object::Reference(id));
    }

    match &plan.existing_field {
        Some((field_id, dict)) => {
            let mut field = dict.clone();
            field.set("V", Object::Reference(sig_id));
            if ap_ref.is_some() {
                field.set("AP", Object::Dictionary(ap_dict));
            }
            w.put(*field_id, &Object::Dictionary(field));
            update_form(pdf, &mut w, None, req.certify.map(|_| sig_id))?;
        }
        None => {
            let widget_id = w.allocate();
            let mut widget = Dictionary::new();
            widget.set("Type", name("Annot"));
            widget.set("Subtype", name("Widget"));
            widget.set("FT", name("Sig"));
            widget.set("T", text_string(&plan.field_name));
            widget.set("V", Object::Reference(sig_id));
            widget.set("F", Object::Integer(132)); // Print | Locked
            widget.set("Rect", rect_object(plan.rect));
            widget.set("P", Object::Reference(plan.page_id));
            if ap_ref.is_some() {
                widget.set("AP", Object::Dictionary(ap_dict));
            }
            w.put(widget_id, &Object::Dictionary(widget));
            add_annotation(pdf, &mut w, plan.page_id, widget_id)?;
            update_form(pdf, &mut w, Some(widget_id), req.certify.map(|_| sig_id))?;
        }
    }

    let header_len = format!("{} {} obj\n", sig_id.0, sig_id.1).len();
    let offsets = w.finish(out)?;
    let sig_body = offsets[&sig_id.0] + header_len;
    Ok(Layout {
        contents_start: sig_body + contents_rel,
        contents_end: sig_body + contents_rel + 2 * reserved + 2,
        byte_range_at: sig_body + byte_range_rel,
        byte_range_len: BYTE_RANGE_PLACEHOLDER.len(),
    })
}

/// Add the widget to the page's /Annots (the array may be direct or an indirect object).
fn add_annotation(
    pdf: &ParsedPdf,
    w: &mut RevisionWriter,
    page_id: ObjectId,
    widget: ObjectId,
) -> Result<(), PdfError> {
    let page = pdf.doc.get_dictionary(page_id)?.clone();
    match page.get(b"Annots") {
        Ok(Object::Reference(arr_id)) => {
            let mut arr = pdf
                .doc
                .get_object(*arr_id)?
                .as_array()
                .map_err(|_| {
                    PdfError::Malformed(format!(
                        "/Annots {arr_id:?} of page {page_id:?} is not an array"
                    ))
                })?
                .clone();
            arr.push(Object::Reference(widget));
            w.put(*arr_id, &Object::Array(arr));
        }
        Ok(Object::Array(arr)) => {
            let mut arr = arr.clone();
            arr.push(Object::Reference(widget));
            let mut page = page.clone();
            page.set("Annots", Object::Array(arr));
            w.put(page_id, &Object::Dictionary(page));
        }
        _ => {
            let mut page = page.clone();
            page.set("Annots", Object::Array(vec![Object::Reference(widget)]));
            w.put(page_id, &Object::Dictionary(page));
        }
    }
    Ok(())
}

/// Register the field in /AcroForm (creating it if needed), set /SigFlags 3, and for a
/// certification signature add /Perms /DocMDP to the catalog.
fn update_form(
    pdf: &ParsedPdf,
    w: &mut RevisionWriter,
    new_field: Option<ObjectId>,
    certify_sig: Option<ObjectId>,
) -> Result<(), PdfError> {
    let root_id = pdf.root_id();
    let mut catalog = pdf.catalog()?.clone();
    let mut catalog_changed = false;
    let (form_id, mut form) = match pdf.acro_form()? {
        Some((id, d)) => (id, d),
        None => (None, Dictionary::new()),
    };
    if let Some(field) = new_field {
        match form.get(b"Fields") {
            Ok(Object::Reference(arr_id)) => {
                let arr_id = *arr_id;
                let mut arr = pdf
                    .doc
                    .get_object(arr_id)?
                    .as_array()
                    .map_err(|_| {
                        PdfError::Malformed(format!("/AcroForm /Fields {arr_id:?} is not an array"))
                    })?
                    .clone();
                arr.push(Object::Reference(field));
                w.put(arr_id, &Object::Array(arr));
            }
            Ok(Object::Array(arr)) => {
                let mut arr = arr.clone();
                arr.push(Object::Reference(field));
                form.set("Fields", Object::Array(arr));
            }
            _ => form.set("Fields", Object::Array(vec![Object::Reference(field)])),
        }
    }
    form.set("SigFlags", Object::Integer(3));
    match form_id {
        Some(id) => w.put(id, &Object::Dictionary(form)),
        None => {
            catalog.set("AcroForm", Object::Dictionary(form));
            catalog_changed = true;
        }
    }
    if let Some(sig) = certify_sig {
        let mut perms = Dictionary::new();
        perms.set("DocMDP", Object::Reference(sig));
        catalog.set("Perms", Object::Dictionary(perms));
        catalog_changed = true;
    }
    if catalog_changed {
        w.put(root_id, &Object::Dictionary(catalog));
    }
    Ok(())
}

fn estimate_cms_len(signer: &dyn Signer, timestamped: bool) -> usize {
    let certs: usize = signer.certificate_chain().iter().map(Vec::len).sum();
    // Attributes, identifiers and framing come to well under 1.5 KB; a time-stamp token with
    // the TSA's certificate is typically 2–6 KB.
    certs + signer.max_signature_len() + 1536 + if timestamped { 8192 } else { 0 }
}

/// Sign `input` (a whole PDF) and return the signed file.
///
/// `input` is reused as the output buffer, so a large file is not copied. The clock gives the
/// signing time written to /M and shown in the stamp.
pub fn sign_pdf(
    mut input: Vec<u8>,
    signer: &dyn Signer,
    req: &SignRequest,
    clock: &dyn Clock,
) -> Result<SignedPdf, PdfError> {
    let parsed = ParsedPdf::parse_lean(&input)?;
    let now = clock.now();
    let plan = plan(&parsed, req, now)?;
    let original_len = input.len();
    let mut reserved = estimate_cms_len(signer, req.timestamper.is_some());
    for attempt in 0..2 {
        let layout = write_revision(&parsed, &plan, req, now, reserved, &mut input)?;
        let total = input.len();
        let byte_range = [
            0,
            layout.contents_start,
            layout.contents_end,
            total - layout.contents_end,
        ];
        let mut br =
            format!("[0 {} {} {}]", byte_range[1], byte_range[2], byte_range[3]).into_bytes();
        if br.len() > layout.byte_range_len {
            return Err(PdfError::Malformed(
                "the file is too large for a 10-digit ByteRange".into(),
            ));
        }
        br.resize(layout.byte_range_len, b' ');
        input[layout.byte_range_at..layout.byte_range_at + layout.byte_range_len]
            .copy_from_slice(&br);

        let digest_alg = signer.algorithm().digest();
        let mut ctx = digest_alg.context();
        ctx.update(&input[..byte_range[1]]);
        ctx.update(&input[byte_range[2]..]);
        let digest = ctx.finish();
        let cms = build_pades_cms(signer, digest.as_ref(), req.timestamper)?;
        if cms.cms.len() > reserved {
            input.truncate(original_len);
            if attempt == 0 {
                reserved = cms.cms.len() + 2048;
                continue;
            }
            return Err(PdfError::ContentsTooSmall {
                needed: cms.cms.len(),
                reserved,
            });
        }
        let hex = &mut input[layout.contents_start + 1..layout.contents_end - 1];
        const HEX: &[u8; 16] = b"0123456789ABCDEF";
        for (i, b) in cms.cms.iter().enumerate() {
            hex[2 * i] = HEX[usize::from(b >> 4)];
            hex[2 * i + 1] = HEX[usize::from(b & 15)];
        }
        return Ok(SignedPdf {
            bytes: input,
            field_name: plan.field_name,
            byte_range,
            signing_time: now,
            cms_len: cms.cms.len(),
            reserved,
        });
    }
    Err(PdfError::ContentsTooSmall {
        needed: reserved,
        reserved,
    })
}

/// Names of signature fields that hold a signature, for messages and tests.
pub fn signed_field_names(pdf: &ParsedPdf) -> Result<Vec<String>, PdfError> {
    Ok(pdf
        .fields()?
        .into_iter()
        .filter(|(_, _, d)| {
            d.get(b"FT")
                .and_then(Object::as_name)
                .is_ok_and(|ft| ft == b"Sig")
                && d.has(b"V")
        })
        .map(|(n, _, _)| n)
        .collect())
}
