//! What later revisions changed after a signature (ISO 32000-1 §12.8.2.2, EN 319 142-1 §5.4):
//! the objects of the signed revision are compared with the final document's, and each change
//! is described and judged against what the signature's DocMDP level permits.

use super::parse::ParsedPdf;
use lopdf::{Dictionary, Object, ObjectId};
use serde::Serialize;
use std::collections::{BTreeSet, HashMap, HashSet};

/// One change after a signature.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Modification {
    /// 1-based revision that holds the change.
    pub revision: usize,
    pub description: String,
    pub allowed: bool,
}

/// What may change after the signature: the DocMDP P value (ISO 32000-1 Table 254), with
/// approval signatures in an uncertified document judged as P=2 (form filling and signing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permission(pub i64);

impl Permission {
    fn signing(self) -> bool {
        self.0 >= 2
    }
    fn form_filling(self) -> bool {
        self.0 >= 2
    }
    fn annotations(self) -> bool {
        self.0 >= 3
    }
}

fn ty(d: &Dictionary) -> Option<&[u8]> {
    d.get(b"Type").and_then(Object::as_name).ok()
}

fn subtype(d: &Dictionary) -> Option<&[u8]> {
    d.get(b"Subtype").and_then(Object::as_name).ok()
}

/// Equality of two objects, streams compared by dictionary and data (large streams left out of
/// the document model are compared by their bytes in the file).
fn same(a: &Object, b: &Object, old: (&ParsedPdf, &[u8]), new: (&ParsedPdf, &[u8])) -> bool {
    match (a, b) {
        (Object::Stream(x), Object::Stream(y)) => {
            let data = |s: &lopdf::Stream, (pdf, bytes): (&ParsedPdf, &[u8])| -> Vec<u8> {
                if s.content.len() <= 1 {
                    if let Some(pos) = s.start_position {
                        if let Some(&(_, len)) = pdf.bulk.iter().find(|(o, _)| *o == pos) {
                            return ring::digest::digest(
                                &ring::digest::SHA256,
                                &bytes[pos..pos + len],
                            )
                            .as_ref()
                            .to_vec();
                        }
                    }
                }
                ring::digest::digest(&ring::digest::SHA256, &s.content)
                    .as_ref()
                    .to_vec()
            };
            let mut dx = x.dict.clone();
            let mut dy = y.dict.clone();
            dx.remove(b"Length");
            dy.remove(b"Length");
            dx == dy && data(x, old) == data(y, new)
        }
        _ => a == b,
    }
}

/// Structure of the final document: which objects play which role.
struct Roles {
    sig_fields: HashMap<ObjectId, String>,
    other_fields: HashMap<ObjectId, String>,
    widgets: HashSet<ObjectId>,
    widget_ap_streams: HashSet<ObjectId>,
    pages: HashMap<ObjectId, usize>,
    annots_arrays: HashMap<ObjectId, ObjectId>,
    dss: HashSet<ObjectId>,
    info: Option<ObjectId>,
    metadata: Option<ObjectId>,
    acro_form: Option<ObjectId>,
    fields_array: Option<ObjectId>,
}

fn refs_in(obj: &Object, out: &mut Vec<ObjectId>) {
    match obj {
        Object::Reference(id) => out.push(*id),
        Object::Array(a) => a.iter().for_each(|o| refs_in(o, out)),
        Object::Dictionary(d) => d.iter().for_each(|(_, o)| refs_in(o, out)),
        Object::Stream(s) => s.dict.iter().for_each(|(_, o)| refs_in(o, out)),
        _ => {}
    }
}

/// All objects reachable from `start` (bounded).
fn closure(pdf: &ParsedPdf, start: &[ObjectId], out: &mut HashSet<ObjectId>) {
    let mut stack: Vec<ObjectId> = start.to_vec();
    while let Some(id) = stack.pop() {
        if out.len() > 100_000 || !out.insert(id) {
            continue;
        }
        if let Ok(o) = pdf.doc.get_object(id) {
            let mut r = Vec::new();
            refs_in(o, &mut r);
            stack.extend(r);
        }
    }
}

fn roles(pdf: &ParsedPdf) -> Roles {
    let mut r = Roles {
        sig_fields: HashMap::new(),
        other_fields: HashMap::new(),
        widgets: HashSet::new(),
        widget_ap_streams: HashSet::new(),
        pages: HashMap::new(),
        annots_arrays: HashMap::new(),
        dss: HashSet::new(),
        info: pdf.trailer.get(b"Info").and_then(Object::as_reference).ok(),
        metadata: None,
        acro_form: None,
        fields_array: None,
    };
    for (name, id, dict) in pdf.fields().unwrap_or_default() {
        if dict
            .get(b"FT")
            .and_then(Object::as_name)
            .is_ok_and(|f| f == b"Sig")
        {
            r.sig_fields.insert(id, name);
        } else {
            r.other_fields.insert(id, name);
        }
    }
    for (i, page_id) in pdf.pages().into_iter().enumerate() {
        r.pages.insert(page_id, i + 1);
        let Ok(page) = pdf.doc.get_dictionary(page_id) else {
            continue;
        };
        if let Ok(Object::Reference(a)) = page.get(b"Annots") {
            r.annots_arrays.insert(*a, page_id);
        }
        let annots = page
            .get(b"Annots")
            .ok()
            .and_then(|a| pdf.doc.dereference(a).ok())
            .and_then(|(_, a)| a.as_array().ok());
        for a in annots.into_iter().flatten() {
            let Ok(id) = a.as_reference() else { continue };
            let Ok(d) = pdf.doc.get_dictionary(id) else {
                continue;
            };
            if subtype(d) == Some(b"Widget") {
                r.widgets.insert(id);
                if let Ok(ap) = d.get(b"AP") {
                    let mut refs = Vec::new();
                    refs_in(ap, &mut refs);
                    let mut all = HashSet::new();
                    closure(pdf, &refs, &mut all);
                    r.widget_ap_streams.extend(all);
                }
            }
        }
    }
    if let Ok(catalog) = pdf.catalog() {
        if let Ok(dss) = catalog.get(b"DSS") {
            let mut refs = Vec::new();
            refs_in(dss, &mut refs);
            closure(pdf, &refs, &mut r.dss);
        }
        r.metadata = catalog.get(b"Metadata").and_then(Object::as_reference).ok();
        if let Ok(Object::Reference(af)) = catalog.get(b"AcroForm") {
            r.acro_form = Some(*af);
        }
    }
    if let Ok(Some((_, form))) = pdf.acro_form() {
        if let Ok(Object::Reference(f)) = form.get(b"Fields") {
            r.fields_array = Some(*f);
        }
    }
    r
}

fn changed_keys(a: &Dictionary, b: &Dictionary) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    for (k, v) in a.iter() {
        if b.get(k).ok() != Some(v) {
            keys.insert(String::from_utf8_lossy(k).into_owned());
        }
    }
    for (k, _) in b.iter() {
        if !a.has(k) {
            keys.insert(String::from_utf8_lossy(k).into_owned());
        }
    }
    keys
}

fn ref_list(pdf: &ParsedPdf, obj: Option<&Object>) -> Vec<ObjectId> {
    obj.and_then(|o| pdf.doc.dereference(o).ok())
        .and_then(|(_, o)| o.as_array().ok())
        .map(|a| a.iter().filter_map(|o| o.as_reference().ok()).collect())
        .unwrap_or_default()
}

struct Judge<'a> {
    old: &'a ParsedPdf,
    new: &'a ParsedPdf,
    roles: Roles,
    perm: Permission,
    out: Vec<Modification>,
    revision_of: &'a dyn Fn(ObjectId) -> usize,
}

impl Judge<'_> {
    fn push(&mut self, id: ObjectId, allowed: bool, description: String) {
        let revision = (self.revision_of)(id);
        let m = Modification {
            revision,
            description,
            allowed,
        };
        if !self.out.contains(&m) {
            self.out.push(m);
        }
    }

    /// Judge annotations added to or removed from a page.
    fn annots(&mut self, id: ObjectId, page: usize, old: Vec<ObjectId>, new: Vec<ObjectId>) {
        for a in new.iter().filter(|a| !old.contains(a)) {
            if let Some(name) = self.roles.sig_fields.get(a).cloned() {
                self.push(
                    id,
                    self.perm.signing(),
                    format!("signature field {name} added on page {page}"),
                );
            } else if self.roles.widgets.contains(a) {
                self.push(id, false, format!("form field widget added on page {page}"));
            } else {
                self.push(
                    id,
                    self.perm.annotations(),
                    format!("annotation added on page {page}"),
                );
            }
        }
        for a in old.iter().filter(|a| !new.contains(a)) {
            let _ = a;
            self.push(
                id,
                self.perm.annotations(),
                format!("annotation removed from page {page}"),
            );
        }
    }

    fn fields(&mut self, id: ObjectId, old: Vec<ObjectId>, new: Vec<ObjectId>) {
        for f in new.iter().filter(|f| !old.contains(f)) {
            if !self.roles.sig_fields.contains_key(f) {
                let name = self.roles.other_fields.get(f).cloned().unwrap_or_default();
                self.push(id, false, format!("form field {name} added"));
            }
        }
        if old.iter().any(|f| !new.contains(f)) {
            self.push(id, false, "form field removed".into());
        }
    }

    fn object(&mut self, id: ObjectId, before: &Object, after: &Object) {
        let (Ok(a), Ok(b)) = (
            before
                .as_dict()
                .or_else(|_| before.as_stream().map(|s| &s.dict)),
            after
                .as_dict()
                .or_else(|_| after.as_stream().map(|s| &s.dict)),
        ) else {
            // Arrays: /Fields or /Annots held indirectly.
            if Some(id) == self.roles.fields_array {
                let (o, n) = (
                    ref_list(self.old, Some(before)),
                    ref_list(self.new, Some(after)),
                );
                self.fields(id, o, n);
            } else if let Some(page) = self.roles.annots_arrays.get(&id).copied() {
                let n = self.roles.pages.get(&page).copied().unwrap_or(0);
                let (o, nw) = (
                    ref_list(self.old, Some(before)),
                    ref_list(self.new, Some(after)),
                );
                self.annots(id, n, o, nw);
            } else {
                self.push(id, false, format!("object {} changed", id.0));
            }
            return;
        };
        let keys = changed_keys(a, b);
        let kind = ty(b).map(|t| String::from_utf8_lossy(t).into_owned());
        if matches!(ty(b), Some(b"XRef") | Some(b"ObjStm")) {
            return;
        }
        if id == self.old.root_id() {
            for k in &keys {
                match k.as_str() {
                    "AcroForm" => {
                        if let (Ok(Object::Dictionary(fa)), Ok(Object::Dictionary(fb))) =
                            (a.get(b"AcroForm"), b.get(b"AcroForm"))
                        {
                            self.form(id, fa, fb);
                        }
                    }
                    "DSS" => self.push(id, true, "validation data (DSS) added".into()),
                    "Extensions" | "Version" => {
                        self.push(id, true, format!("catalog /{k} updated"))
                    }
                    "Metadata" => self.push(id, true, "XMP metadata replaced".into()),
                    other => self.push(id, false, format!("catalog entry /{other} changed")),
                }
            }
            return;
        }
        if Some(id) == self.roles.acro_form {
            self.form(id, a, b);
            return;
        }
        if let Some(page) = self.roles.pages.get(&id).copied() {
            for k in &keys {
                if k == "Annots" {
                    let (o, n) = (
                        ref_list(self.old, a.get(b"Annots").ok()),
                        ref_list(self.new, b.get(b"Annots").ok()),
                    );
                    self.annots(id, page, o, n);
                } else {
                    self.push(
                        id,
                        false,
                        format!("page {page}: /{k} changed (content, resources or geometry)"),
                    );
                }
            }
            return;
        }
        if let Some(name) = self.roles.sig_fields.get(&id).cloned() {
            let signing = keys
                .iter()
                .all(|k| ["V", "AP", "AS", "F", "MK"].contains(&k.as_str()));
            if keys.contains("V") && a.get(b"V").is_err() && signing {
                self.push(
                    id,
                    self.perm.signing(),
                    format!("signature field {name} signed"),
                );
            } else if !keys.is_empty() {
                self.push(
                    id,
                    false,
                    format!(
                        "signature field {name} changed ({})",
                        keys.iter().cloned().collect::<Vec<_>>().join(", ")
                    ),
                );
            }
            return;
        }
        if self.roles.other_fields.contains_key(&id) || (self.roles.widgets.contains(&id)) {
            let name = self
                .roles
                .other_fields
                .get(&id)
                .cloned()
                .unwrap_or_else(|| "(widget)".into());
            if keys
                .iter()
                .all(|k| ["V", "AP", "AS", "MK"].contains(&k.as_str()))
            {
                self.push(
                    id,
                    self.perm.form_filling(),
                    format!("form field {name} filled in"),
                );
            } else {
                self.push(
                    id,
                    false,
                    format!(
                        "form field {name} changed ({})",
                        keys.iter().cloned().collect::<Vec<_>>().join(", ")
                    ),
                );
            }
            return;
        }
        if Some(id) == self.roles.info {
            self.push(id, true, "document information (/Info) updated".into());
            return;
        }
        if Some(id) == self.roles.metadata {
            self.push(id, true, "XMP metadata updated".into());
            return;
        }
        if self.roles.dss.contains(&id) {
            self.push(id, true, "validation data (DSS) updated".into());
            return;
        }
        if self.roles.widget_ap_streams.contains(&id) {
            self.push(
                id,
                self.perm.form_filling(),
                "form field appearance updated".into(),
            );
            return;
        }
        let what = match (kind.as_deref(), subtype(b)) {
            (_, Some(b"Form")) | (_, Some(b"Image")) => "page content (XObject)".to_string(),
            (Some(t), _) => format!("/{t} object"),
            (None, _) if before.as_stream().is_ok() => "content stream".to_string(),
            _ => "object".to_string(),
        };
        self.push(id, false, format!("{what} {} changed", id.0));
    }

    fn form(&mut self, id: ObjectId, a: &Dictionary, b: &Dictionary) {
        for k in changed_keys(a, b) {
            match k.as_str() {
                "Fields" => {
                    let (o, n) = (
                        ref_list(self.old, a.get(b"Fields").ok()),
                        ref_list(self.new, b.get(b"Fields").ok()),
                    );
                    self.fields(id, o, n);
                }
                "SigFlags" | "DR" | "DA" | "NeedAppearances" => {}
                other => self.push(
                    id,
                    false,
                    format!("interactive form entry /{other} changed"),
                ),
            }
        }
    }
}

/// Compare the signed revision `old` with the final document `new` and judge each change.
/// `revision_of` tells which revision (1-based) holds an object's final definition.
pub fn analyse(
    old: (&ParsedPdf, &[u8]),
    new: (&ParsedPdf, &[u8]),
    perm: Permission,
    revision_of: &dyn Fn(ObjectId) -> usize,
) -> Vec<Modification> {
    let roles = roles(new.0);
    let mut judge = Judge {
        old: old.0,
        new: new.0,
        roles,
        perm,
        out: Vec::new(),
        revision_of,
    };
    let mut ids: Vec<&ObjectId> = new.0.doc.objects.keys().collect();
    ids.sort();
    for id in ids {
        let Ok(after) = new.0.doc.get_object(*id) else {
            continue;
        };
        match old.0.doc.objects.get(id) {
            Some(before) if !same(before, after, old, new) => judge.object(*id, before, after),
            _ => {}
        }
    }
    for id in old.0.doc.objects.keys() {
        if !new.0.doc.objects.contains_key(id) {
            judge.push(*id, false, format!("object {} removed", id.0));
        }
    }
    if perm.0 <= 1 {
        // P=1: only validation data and document time-stamps may follow (ISO 32000-2 §12.8.2.2.2).
        for m in &mut judge.out {
            if !(m.description.contains("DSS")
                || m.description.contains("/Info")
                || m.description.contains("XMP"))
            {
                m.allowed = false;
            }
        }
    }
    judge.out
}
