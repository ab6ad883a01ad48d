//! The visible stamp (ISO 32000-1 §12.5.5 appearance streams): a form XObject with the signer's
//! name, position, NIP, signing time, a QR code to the verification page, and the statement that
//! the document was signed electronically; or an image supplied by the signer.

use super::PdfError;
use super::fonts::{Font, win_ansi, wrap};
use super::image::StampImage;
use lopdf::{Dictionary, Object, ObjectId, Stream};
use qrcode::{EcLevel, QrCode};
use std::fmt::Write as _;

/// The footer required on Indonesian electronically signed letters.
pub const FOOTER: &str =
    "Dokumen ini telah ditandatangani secara elektronik menggunakan sertifikat elektronik";

/// What the stamp says.
#[derive(Debug, Clone, Default)]
pub struct StampText {
    /// The signer's name.
    pub name: String,
    /// Position (jabatan), e.g. "a.n. Menteri, Kepala Biro Umum".
    pub title: Option<String>,
    /// Identifier shown as "NIP. …".
    pub signer_id: Option<String>,
    /// Signing time as displayed, e.g. "23 November 2026 10:15 WIB".
    pub time_text: String,
    /// URL the QR code encodes; no QR when absent.
    pub qr_url: Option<String>,
    /// Organisation (O) of the certificate issuer, named in the footer.
    pub issuer_org: Option<String>,
}

impl StampText {
    /// The footer sentence, naming the issuer when known.
    pub fn footer(&self) -> String {
        match &self.issuer_org {
            Some(o) if !o.is_empty() => format!("{FOOTER} yang diterbitkan oleh {o}"),
            _ => FOOTER.to_string(),
        }
    }
}

/// Escape bytes for a literal string in a content stream (ISO 32000-1 §7.3.4.2).
fn literal(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() + 2);
    s.push('(');
    for &b in bytes {
        match b {
            b'(' | b')' | b'\\' => {
                s.push('\\');
                s.push(b as char);
            }
            32..=126 => s.push(b as char),
            _ => {
                let _ = write!(s, "\\{b:03o}");
            }
        }
    }
    s.push(')');
    s
}

fn text_line(out: &mut String, font: Font, size: f32, x: f32, y: f32, text: &str) {
    let _ = writeln!(
        out,
        "BT /{} {size:.2} Tf {x:.2} {y:.2} Td {} Tj ET",
        font.resource(),
        literal(&win_ansi(text))
    );
}

/// Dark modules of a QR code as filled rectangles in a `size`-point square at (x, y), with
/// horizontal runs merged.
fn qr_ops(out: &mut String, url: &str, x: f32, y: f32, size: f32) -> Result<(), PdfError> {
    let code = QrCode::with_error_correction_level(url.as_bytes(), EcLevel::M).map_err(|e| {
        PdfError::Placement(format!("the verification URL does not fit a QR code: {e}"))
    })?;
    let n = code.width();
    let colors = code.to_colors();
    // One module of quiet zone on each side; the white stamp background provides the rest.
    let module = size / (n as f32 + 2.0);
    out.push_str("0 0 0 rg\n");
    for row in 0..n {
        let mut col = 0;
        while col < n {
            if colors[row * n + col] == qrcode::Color::Dark {
                let start = col;
                while col < n && colors[row * n + col] == qrcode::Color::Dark {
                    col += 1;
                }
                let rx = x + module * (start as f32 + 1.0);
                let ry = y + size - module * (row as f32 + 2.0);
                let _ = writeln!(
                    out,
                    "{rx:.3} {ry:.3} {:.3} {module:.3} re",
                    module * (col - start) as f32
                );
            } else {
                col += 1;
            }
        }
    }
    out.push_str("f\n");
    Ok(())
}

fn font_resources() -> Dictionary {
    let mut fonts = Dictionary::new();
    for font in [Font::Helvetica, Font::HelveticaBold] {
        let mut d = Dictionary::new();
        d.set("Type", Object::Name(b"Font".to_vec()));
        d.set("Subtype", Object::Name(b"Type1".to_vec()));
        d.set(
            "BaseFont",
            Object::Name(font.base_font().as_bytes().to_vec()),
        );
        d.set("Encoding", Object::Name(b"WinAnsiEncoding".to_vec()));
        fonts.set(font.resource(), Object::Dictionary(d));
    }
    let mut res = Dictionary::new();
    res.set("Font", Object::Dictionary(fonts));
    res
}

/// A form XObject of `width` × `height` points drawing `content` with `resources`.
fn form_xobject(width: f32, height: f32, content: String, resources: Dictionary) -> Stream {
    let mut dict = Dictionary::new();
    dict.set("Type", Object::Name(b"XObject".to_vec()));
    dict.set("Subtype", Object::Name(b"Form".to_vec()));
    dict.set(
        "BBox",
        Object::Array(vec![
            0.into(),
            0.into(),
            Object::Real(width),
            Object::Real(height),
        ]),
    );
    dict.set("Resources", Object::Dictionary(resources));
    Stream::new(dict, content.into_bytes())
}

/// The full signature stamp in a `width` × `height` point box.
pub fn signature_stamp(text: &StampText, width: f32, height: f32) -> Result<Stream, PdfError> {
    if !(width >= 60.0 && height >= 30.0) {
        return Err(PdfError::Placement(format!(
            "a {width}×{height} pt stamp is too small (at least 60×30)"
        )));
    }
    let pad = (height.min(width) * 0.04).clamp(2.0, 6.0);
    let mut c = String::new();
    // Opaque background that also covers an anchor tag under the stamp, then a thin frame.
    let _ = writeln!(c, "q 1 1 1 rg 0 0 {width:.2} {height:.2} re f");
    let _ = writeln!(
        c,
        "0.45 0.45 0.45 RG 0.6 w 0.3 0.3 {:.2} {:.2} re S Q",
        width - 0.6,
        height - 0.6
    );

    // Footer across the bottom.
    let footer_size = (height * 0.06).clamp(4.0, 6.5);
    let footer_lines = wrap(
        Font::Helvetica,
        &text.footer(),
        footer_size,
        width - 2.0 * pad,
    );
    let footer_height = footer_lines.len() as f32 * footer_size * 1.15;
    c.push_str("0.2 0.2 0.2 rg\n");
    for (i, line) in footer_lines.iter().enumerate() {
        let y = pad + footer_height - (i as f32 + 1.0) * footer_size * 1.15 + footer_size * 0.25;
        text_line(&mut c, Font::Helvetica, footer_size, pad, y, line);
    }
    let _ = writeln!(
        c,
        "0.6 0.6 0.6 RG 0.4 w {pad:.2} {:.2} m {:.2} {:.2} l S",
        pad + footer_height + 1.0,
        width - pad,
        pad + footer_height + 1.0
    );

    // QR code at the left of the upper area.
    let upper_bottom = pad + footer_height + 2.0;
    let upper = height - upper_bottom - pad;
    let mut text_x = pad;
    if let Some(url) = &text.qr_url {
        let q = upper.min(width * 0.38);
        qr_ops(&mut c, url, pad, upper_bottom + (upper - q) / 2.0, q)?;
        text_x = pad + q + pad;
    }
    let text_width = width - text_x - pad;

    // Text lines, shrinking the size until they fit the upper area.
    let mut size = (upper / 6.0).clamp(4.0, 9.0);
    let lines = loop {
        let mut lines: Vec<(Font, f32, String)> = Vec::new();
        let small = size * 0.8;
        lines.push((
            Font::Helvetica,
            small,
            "Ditandatangani secara elektronik oleh:".into(),
        ));
        if let Some(t) = &text.title {
            for l in wrap(Font::Helvetica, t, size, text_width) {
                lines.push((Font::Helvetica, size, l));
            }
        }
        for l in wrap(Font::HelveticaBold, &text.name, size, text_width) {
            lines.push((Font::HelveticaBold, size, l));
        }
        if let Some(id) = &text.signer_id {
            lines.push((Font::Helvetica, size, format!("NIP. {id}")));
        }
        lines.push((Font::Helvetica, small, text.time_text.clone()));
        let total: f32 = lines.iter().map(|(_, s, _)| s * 1.2).sum();
        let widest = lines
            .iter()
            .map(|(f, s, l)| f.text_width(l, *s))
            .fold(0.0, f32::max);
        if (total <= upper && widest <= text_width) || size <= 4.0 {
            break lines;
        }
        size -= 0.25;
    };
    let total: f32 = lines.iter().map(|(_, s, _)| s * 1.2).sum();
    let mut y = upper_bottom + (upper + total) / 2.0;
    c.push_str("0 0 0 rg\n");
    for (font, s, line) in &lines {
        y -= s * 1.2;
        text_line(&mut c, *font, *s, text_x, y + s * 0.25, line);
    }
    Ok(form_xobject(width, height, c, font_resources()))
}

/// A small initials (paraf) stamp: the reviewer's initials and the date.
pub fn initials_stamp(
    initials: &str,
    date_text: &str,
    width: f32,
    height: f32,
) -> Result<Stream, PdfError> {
    if !(width >= 20.0 && height >= 12.0) {
        return Err(PdfError::Placement(format!(
            "a {width}×{height} pt initials stamp is too small (at least 20×12)"
        )));
    }
    let mut c = String::new();
    let _ = writeln!(c, "q 1 1 1 rg 0 0 {width:.2} {height:.2} re f Q");
    let big = (height * 0.45).min(14.0);
    let small = (height * 0.2).clamp(3.5, 6.0);
    c.push_str("0 0 0.5 rg\n");
    let w = Font::HelveticaBold.text_width(initials, big);
    text_line(
        &mut c,
        Font::HelveticaBold,
        big,
        ((width - w) / 2.0).max(1.0),
        height - big - 1.0,
        initials,
    );
    let w = Font::Helvetica.text_width(date_text, small);
    text_line(
        &mut c,
        Font::Helvetica,
        small,
        ((width - w) / 2.0).max(1.0),
        2.0,
        date_text,
    );
    Ok(form_xobject(width, height, c, font_resources()))
}

/// Name of the image in an image stamp's resources.
const IMAGE_RESOURCE: &str = "Img";

/// A stamp that is just `image` (e.g. the signer's handwritten-signature specimen), scaled to
/// fit the `width` × `height` point box with its aspect ratio kept, and centred. The image
/// XObject itself is written separately and linked with [`attach_image`].
pub fn image_stamp(image: &StampImage, width: f32, height: f32) -> Result<Stream, PdfError> {
    if !(width >= 4.0 && height >= 4.0) {
        return Err(PdfError::Placement(format!(
            "a {width}×{height} pt image stamp is too small (at least 4×4)"
        )));
    }
    let (iw, ih) = (image.width() as f32, image.height() as f32);
    let scale = (width / iw).min(height / ih);
    let (dw, dh) = (iw * scale, ih * scale);
    let (x, y) = ((width - dw) / 2.0, (height - dh) / 2.0);
    let content = format!("q {dw:.3} 0 0 {dh:.3} {x:.3} {y:.3} cm /{IMAGE_RESOURCE} Do Q\n");
    Ok(form_xobject(width, height, content, Dictionary::new()))
}

/// Link the image XObject `image` (already written) into an image stamp's resources.
pub fn attach_image(form: &mut Stream, image: ObjectId) {
    let mut xobjects = Dictionary::new();
    xobjects.set(IMAGE_RESOURCE, Object::Reference(image));
    let mut res = Dictionary::new();
    res.set("XObject", Object::Dictionary(xobjects));
    form.dict.set("Resources", Object::Dictionary(res));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_escapes_delimiters_and_high_bytes() {
        assert_eq!(literal(b"a(b)c\\"), "(a\\(b\\)c\\\\)");
        assert_eq!(literal(&[0xe9]), "(\\351)");
    }

    #[test]
    fn image_stamp_keeps_the_aspect_ratio_and_centres() {
        // A 4×2 grey JPEG header is enough: only its size matters here.
        let mut jpeg = vec![
            0xFF, 0xD8, 0xFF, 0xC0, 0x00, 0x0B, 8, 0, 2, 0, 4, 1, 1, 0x11, 0,
        ];
        jpeg.extend_from_slice(&[0xFF, 0xDA, 0x00, 0x08, 1, 1, 0, 0, 0x3F, 0, 0xFF, 0xD9]);
        let image = StampImage::decode(&jpeg).unwrap();
        let mut s = image_stamp(&image, 100.0, 100.0).unwrap();
        let body = String::from_utf8_lossy(&s.content).to_string();
        assert!(
            body.contains("100.000 0 0 50.000 0.000 25.000 cm /Img Do"),
            "{body}"
        );
        attach_image(&mut s, (7, 0));
        let res = s.dict.get(b"Resources").unwrap().as_dict().unwrap();
        let xo = res.get(b"XObject").unwrap().as_dict().unwrap();
        assert_eq!(xo.get(b"Img").unwrap().as_reference().unwrap(), (7, 0));
        assert!(image_stamp(&image, 2.0, 50.0).is_err());
    }

    #[test]
    fn stamp_contains_all_texts() {
        let text = StampText {
            name: "Dr. Budi Santoso, M.Si.".into(),
            title: Some("Kepala Biro Umum".into()),
            signer_id: Some("197001012000031001".into()),
            time_text: "23 November 2026 10:15 WIB".into(),
            qr_url: Some("https://segel.example/v/abc".into()),
            issuer_org: Some("Balai Sertifikasi Elektronik".into()),
        };
        let s = signature_stamp(&text, 240.0, 100.0).unwrap();
        let body = String::from_utf8_lossy(&s.content).to_string();
        for needle in [
            "Budi Santoso",
            "Kepala Biro Umum",
            "NIP. 197001012000031001",
            "WIB",
            " re",
            "Dokumen ini",
        ] {
            assert!(body.contains(needle), "{needle} missing");
        }
        assert!(signature_stamp(&text, 10.0, 10.0).is_err());
    }
}
