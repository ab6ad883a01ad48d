//! Writing one incremental update (ISO 32000-1 §7.5.6): new and changed objects, then a
//! cross-reference section of the same kind as the previous one, with /Prev pointing back.
//! Nothing goes into an object stream, so the signature dictionary can be patched in place.

use super::PdfError;
use super::parse::{ParsedPdf, XrefKind};
use lopdf::{Dictionary, Object, ObjectId, StringFormat};
use std::collections::BTreeMap;
use std::io::Write;

/// Serialize one object body with lopdf's writer.
pub fn serialize(object: &Object) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing to a Vec cannot fail.
    let _ = lopdf::Writer::write_object(&mut out, object);
    out
}

/// The objects of a revision being assembled.
pub struct RevisionWriter<'a> {
    parsed: &'a ParsedPdf,
    next_id: u32,
    bodies: BTreeMap<u32, (u16, Vec<u8>)>,
}

impl<'a> RevisionWriter<'a> {
    pub fn new(parsed: &'a ParsedPdf) -> Self {
        RevisionWriter {
            parsed,
            next_id: parsed.size,
            bodies: BTreeMap::new(),
        }
    }

    /// A fresh object number.
    pub fn allocate(&mut self) -> ObjectId {
        let id = (self.next_id, 0);
        self.next_id += 1;
        id
    }

    /// Add or replace an object.
    pub fn put(&mut self, id: ObjectId, object: &Object) {
        self.bodies.insert(id.0, (id.1, serialize(object)));
    }

    /// Add an object whose body the caller serialized (the signature dictionary).
    pub fn put_raw(&mut self, id: ObjectId, body: Vec<u8>) {
        self.bodies.insert(id.0, (id.1, body));
    }

    /// Append the revision to `out` (which holds the original file) and return each object's
    /// absolute offset.
    pub fn finish(self, out: &mut Vec<u8>) -> Result<BTreeMap<u32, usize>, PdfError> {
        let RevisionWriter {
            parsed,
            mut next_id,
            bodies,
        } = self;
        if !out.ends_with(b"\n") && !out.ends_with(b"\r") {
            out.push(b'\n');
        }
        let mut offsets = BTreeMap::new();
        for (num, (generation, body)) in &bodies {
            offsets.insert(*num, out.len());
            write!(out, "{num} {generation} obj\n").ok();
            out.extend_from_slice(body);
            out.extend_from_slice(b"\nendobj\n");
        }
        let mut trailer = Dictionary::new();
        trailer.set("Root", Object::Reference(parsed.root_id()));
        if let Ok(info) = parsed.trailer.get(b"Info") {
            trailer.set("Info", info.clone());
        }
        trailer.set("ID", new_file_id(parsed, out.len()));
        trailer.set("Prev", Object::Integer(parsed.startxref as i64));
        let generations: BTreeMap<u32, u16> = bodies.iter().map(|(n, (g, _))| (*n, *g)).collect();
        match parsed.xref_kind {
            XrefKind::Table => {
                trailer.set("Size", Object::Integer(i64::from(next_id)));
                let xref_offset = out.len();
                out.extend_from_slice(b"xref\n");
                for run in runs(offsets.keys().copied()) {
                    write!(out, "{} {}\n", run.0, run.1).ok();
                    for num in run.0..run.0 + run.1 {
                        // ISO 32000-1 §7.5.4: each entry is exactly 20 bytes.
                        write!(out, "{:010} {:05} n\r\n", offsets[&num], generations[&num]).ok();
                    }
                }
                out.extend_from_slice(b"trailer\n");
                out.extend_from_slice(&serialize(&Object::Dictionary(trailer)));
                write!(out, "\nstartxref\n{xref_offset}\n%%EOF\n").ok();
            }
            XrefKind::Stream => {
                let xref_num = next_id;
                next_id += 1;
                let xref_offset = out.len();
                let mut all = offsets.clone();
                all.insert(xref_num, xref_offset);
                let mut generations = generations;
                generations.insert(xref_num, 0);
                // ISO 32000-1 §7.5.8.2: field widths /W [1 n 2], type 1 entries only.
                let max = all.values().copied().max().unwrap_or(0) as u64;
                let width = (8 - (max.leading_zeros() / 8) as usize).max(4);
                let mut data = Vec::new();
                let mut index = Vec::new();
                for run in runs(all.keys().copied()) {
                    index.push(Object::Integer(i64::from(run.0)));
                    index.push(Object::Integer(i64::from(run.1)));
                    for num in run.0..run.0 + run.1 {
                        data.push(1u8);
                        data.extend_from_slice(&(all[&num] as u64).to_be_bytes()[8 - width..]);
                        data.extend_from_slice(&generations[&num].to_be_bytes());
                    }
                }
                trailer.set("Type", Object::Name(b"XRef".to_vec()));
                trailer.set("Size", Object::Integer(i64::from(next_id)));
                trailer.set("Index", Object::Array(index));
                trailer.set(
                    "W",
                    Object::Array(vec![
                        Object::Integer(1),
                        Object::Integer(width as i64),
                        Object::Integer(2),
                    ]),
                );
                trailer.set("Length", Object::Integer(data.len() as i64));
                write!(out, "{xref_num} 0 obj\n").ok();
                out.extend_from_slice(&serialize(&Object::Dictionary(trailer)));
                out.extend_from_slice(b"\nstream\n");
                out.extend_from_slice(&data);
                write!(
                    out,
                    "\nendstream\nendobj\nstartxref\n{xref_offset}\n%%EOF\n"
                )
                .ok();
            }
        }
        Ok(offsets)
    }
}

/// Runs of consecutive object numbers: (first, count).
fn runs(nums: impl Iterator<Item = u32>) -> Vec<(u32, u32)> {
    let mut out: Vec<(u32, u32)> = Vec::new();
    for n in nums {
        match out.last_mut() {
            Some((first, count)) if *first + *count == n => *count += 1,
            _ => out.push((n, 1)),
        }
    }
    out
}

/// /ID for the new trailer: the permanent first half kept, the second half changed
/// (ISO 32000-1 §14.4).
fn new_file_id(parsed: &ParsedPdf, salt: usize) -> Object {
    let changing = {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(&salt.to_be_bytes());
        ctx.update(&parsed.startxref.to_be_bytes());
        let mut rnd = [0u8; 16];
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut rnd);
        ctx.update(&rnd);
        ctx.finish().as_ref()[..16].to_vec()
    };
    let permanent = parsed
        .trailer
        .get(b"ID")
        .ok()
        .and_then(|id| id.as_array().ok())
        .and_then(|a| a.first())
        .and_then(|first| first.as_str().ok())
        .map(|s| s.to_vec())
        .unwrap_or_else(|| changing.clone());
    Object::Array(vec![
        Object::String(permanent, StringFormat::Hexadecimal),
        Object::String(changing, StringFormat::Hexadecimal),
    ])
}
