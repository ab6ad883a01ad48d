//! Finding anchor text such as `${ttd}` in page content streams (ISO 32000-1 §9.4): the text
//! operators are interpreted with their text and graphics matrices so the anchor's position in
//! default user space is known, also when it is split over several Tj/TJ operands.

use super::fonts::fallback_width;
use super::parse::ParsedPdf;
use lopdf::content::Content;
use lopdf::{Dictionary, Object, ObjectId};
use std::collections::HashMap;

/// Where an anchor was found, in default user space of its page.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AnchorHit {
    /// 1-based page number.
    pub page: u32,
    pub page_id: ObjectId,
    /// Baseline start of the first glyph.
    pub x: f32,
    pub y: f32,
    /// End of the last glyph's advance on the baseline.
    pub x_end: f32,
    /// Font size in user space (the glyph height scale).
    pub size: f32,
}

type Matrix = [f32; 6];
const IDENTITY: Matrix = [1.0, 0.0, 0.0, 1.0, 0.0, 0.0];

/// `a × b` for PDF matrices [a b c d e f] (row-vector convention, ISO 32000-1 §8.3.4).
fn mul(a: &Matrix, b: &Matrix) -> Matrix {
    [
        a[0] * b[0] + a[1] * b[2],
        a[0] * b[1] + a[1] * b[3],
        a[2] * b[0] + a[3] * b[2],
        a[2] * b[1] + a[3] * b[3],
        a[4] * b[0] + a[5] * b[2] + b[4],
        a[4] * b[1] + a[5] * b[3] + b[5],
    ]
}

fn apply(m: &Matrix, x: f32, y: f32) -> (f32, f32) {
    (x * m[0] + y * m[2] + m[4], x * m[1] + y * m[3] + m[5])
}

fn num(o: &Object) -> f32 {
    match o {
        Object::Integer(i) => *i as f32,
        Object::Real(r) => *r,
        _ => 0.0,
    }
}

/// A glyph placed on a page.
#[derive(Debug, Clone, Copy)]
struct Glyph {
    byte: u8,
    x: f32,
    y: f32,
    x_end: f32,
    size: f32,
}

/// Widths of a simple font from its /FirstChar and /Widths, if it has them.
fn font_widths(doc: &lopdf::Document, font: &Dictionary) -> Option<(i64, Vec<f32>)> {
    let first = font.get(b"FirstChar").ok()?.as_i64().ok()?;
    let widths = doc
        .dereference(font.get(b"Widths").ok()?)
        .ok()?
        .1
        .as_array()
        .ok()?;
    Some((
        first,
        widths
            .iter()
            .map(|w| num(doc.dereference(w).map(|x| x.1).unwrap_or(w)))
            .collect(),
    ))
}

struct TextState {
    tm: Matrix,
    tlm: Matrix,
    size: f32,
    char_spacing: f32,
    word_spacing: f32,
    scale: f32,
    leading: f32,
    rise: f32,
    widths: Option<(i64, Vec<f32>)>,
}

impl TextState {
    fn width(&self, b: u8) -> f32 {
        if let Some((first, w)) = &self.widths {
            let i = i64::from(b) - first;
            if i >= 0 {
                if let Some(w) = w.get(i as usize) {
                    return *w;
                }
            }
        }
        f32::from(fallback_width(b))
    }

    fn show(&mut self, bytes: &[u8], ctm: &Matrix, out: &mut Vec<Glyph>) {
        for &b in bytes {
            let trm = mul(&self.tm, ctm);
            let (x, y) = apply(&trm, 0.0, self.rise);
            let advance = (self.width(b) / 1000.0 * self.size
                + self.char_spacing
                + if b == b' ' { self.word_spacing } else { 0.0 })
                * self.scale;
            let (x_end, _) = apply(&trm, advance, self.rise);
            let size =
                self.size * (trm[2] * trm[2] + trm[3] * trm[3]).sqrt().max(f32::EPSILON) / 1.0;
            out.push(Glyph {
                byte: b,
                x,
                y,
                x_end,
                size: size.abs(),
            });
            self.tm = mul(&[1.0, 0.0, 0.0, 1.0, advance, 0.0], &self.tm);
        }
    }

    fn adjust(&mut self, amount: f32) {
        let tx = -amount / 1000.0 * self.size * self.scale;
        self.tm = mul(&[1.0, 0.0, 0.0, 1.0, tx, 0.0], &self.tm);
    }

    fn next_line(&mut self, tx: f32, ty: f32) {
        self.tlm = mul(&[1.0, 0.0, 0.0, 1.0, tx, ty], &self.tlm);
        self.tm = self.tlm;
    }
}

/// Every glyph drawn by a page's content stream (XObjects are not entered).
fn page_glyphs(pdf: &ParsedPdf, page_id: ObjectId) -> Vec<Glyph> {
    let doc = &pdf.doc;
    let Ok(data) = doc.get_page_content_with_limit(page_id, 64 << 20) else {
        return Vec::new();
    };
    let Ok(content) = Content::decode(&data) else {
        return Vec::new();
    };
    let fonts: HashMap<Vec<u8>, Option<(i64, Vec<f32>)>> = doc
        .get_page_fonts(page_id)
        .map(|f| {
            f.into_iter()
                .map(|(name, dict)| (name, font_widths(doc, dict)))
                .collect()
        })
        .unwrap_or_default();
    let mut glyphs = Vec::new();
    let mut ctm = IDENTITY;
    let mut stack: Vec<Matrix> = Vec::new();
    let mut ts = TextState {
        tm: IDENTITY,
        tlm: IDENTITY,
        size: 0.0,
        char_spacing: 0.0,
        word_spacing: 0.0,
        scale: 1.0,
        leading: 0.0,
        rise: 0.0,
        widths: None,
    };
    for op in &content.operations {
        let o = &op.operands;
        let n = |i: usize| o.get(i).map(num).unwrap_or(0.0);
        match op.operator.as_str() {
            "q" => stack.push(ctm),
            "Q" => ctm = stack.pop().unwrap_or(IDENTITY),
            "cm" if o.len() == 6 => ctm = mul(&[n(0), n(1), n(2), n(3), n(4), n(5)], &ctm),
            "BT" => {
                ts.tm = IDENTITY;
                ts.tlm = IDENTITY;
            }
            "Tf" if o.len() == 2 => {
                ts.size = n(1);
                ts.widths = o[0]
                    .as_name()
                    .ok()
                    .and_then(|name| fonts.get(name).cloned().flatten());
            }
            "Tc" => ts.char_spacing = n(0),
            "Tw" => ts.word_spacing = n(0),
            "Tz" => ts.scale = n(0) / 100.0,
            "TL" => ts.leading = n(0),
            "Ts" => ts.rise = n(0),
            "Td" => ts.next_line(n(0), n(1)),
            "TD" => {
                ts.leading = -n(1);
                ts.next_line(n(0), n(1));
            }
            "Tm" if o.len() == 6 => {
                ts.tlm = [n(0), n(1), n(2), n(3), n(4), n(5)];
                ts.tm = ts.tlm;
            }
            "T*" => ts.next_line(0.0, -ts.leading),
            "Tj" => {
                if let Some(Ok(s)) = o.first().map(Object::as_str) {
                    ts.show(s, &ctm, &mut glyphs);
                }
            }
            "'" => {
                ts.next_line(0.0, -ts.leading);
                if let Some(Ok(s)) = o.first().map(Object::as_str) {
                    ts.show(s, &ctm, &mut glyphs);
                }
            }
            "\"" => {
                ts.word_spacing = n(0);
                ts.char_spacing = n(1);
                ts.next_line(0.0, -ts.leading);
                if let Some(Ok(s)) = o.get(2).map(Object::as_str) {
                    ts.show(s, &ctm, &mut glyphs);
                }
            }
            "TJ" => {
                if let Some(Ok(items)) = o.first().map(Object::as_array) {
                    for item in items {
                        match item {
                            Object::String(s, _) => ts.show(s, &ctm, &mut glyphs),
                            other => ts.adjust(num(other)),
                        }
                    }
                }
            }
            _ => {}
        }
    }
    glyphs
}

/// Find the first occurrence of `anchor` (compared byte-wise, as standard fonts encode ASCII),
/// searching pages in order. Text drawn in composite (two-byte) fonts is not searched.
pub fn find_anchor(pdf: &ParsedPdf, anchor: &str) -> Option<AnchorHit> {
    let needle = anchor.as_bytes();
    if needle.is_empty() {
        return None;
    }
    for (index, page_id) in pdf.pages().into_iter().enumerate() {
        let glyphs = page_glyphs(pdf, page_id);
        let bytes: Vec<u8> = glyphs.iter().map(|g| g.byte).collect();
        if let Some(start) = bytes.windows(needle.len()).position(|w| w == needle) {
            let first = glyphs[start];
            let last = glyphs[start + needle.len() - 1];
            return Some(AnchorHit {
                page: index as u32 + 1,
                page_id,
                x: first.x,
                y: first.y,
                x_end: last.x_end,
                size: first.size,
            });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matrices_compose_like_the_spec() {
        let translate = [1.0, 0.0, 0.0, 1.0, 10.0, 20.0];
        let scale = [2.0, 0.0, 0.0, 2.0, 0.0, 0.0];
        // Translate then scale: the translation is scaled too.
        assert_eq!(apply(&mul(&translate, &scale), 0.0, 0.0), (20.0, 40.0));
        assert_eq!(apply(&mul(&scale, &translate), 1.0, 1.0), (12.0, 22.0));
    }
}
