//! The BSrE e-sign API v2 compatibility routes: identification by `nik` or `email`, INVISIBLE
//! and VISIBLE signatures (rectangle, `tag_koordinat`, `imageBase64` as PNG or JPEG), the
//! time-stamp, the error shapes, and the verify response's field names. Every signed file goes
//! through Segel's verifier and the external validators (pyHanko, pdfsig, qpdf).

use crate::common::*;
use crate::db;
use crate::service::{TestApp, config, spawn};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use lopdf::{Dictionary, Document, Object};
use serde_json::{Value, json};
use std::path::Path;

async fn sign(app: &TestApp, body: &Value) -> reqwest::Response {
    app.client
        .post(format!("{}/api/v2/sign/pdf", app.base))
        .bearer_auth(app.app_key())
        .json(body)
        .send()
        .await
        .unwrap()
}

/// A request signing letter.pdf as the demo signer with these signature properties.
fn request(app: &TestApp, props: Value) -> Value {
    json!({
        "nik": "197001012000031001",
        "passphrase": app.passphrase("signer"),
        "file": [B64.encode(read("fixtures/pdf/letter.pdf"))],
        "signatureProperties": [props],
    })
}

/// Sign, expect 200, and return the one signed file.
async fn sign_ok(app: &TestApp, body: &Value) -> Vec<u8> {
    let r = sign(app, body).await;
    let status = r.status();
    let v: Value = r.json().await.unwrap();
    assert_eq!(status, 200, "{v}");
    assert!(v["time"].is_number(), "{v}");
    assert_eq!(v["file"].as_array().map(Vec::len), Some(1), "{v}");
    B64.decode(v["file"][0].as_str().unwrap()).unwrap()
}

/// Segel's verifier and the validators accept the file, which carries one signature with a
/// time-stamp (the BSrE path time-stamps like an approval).
fn assert_accepted(dir: &Path, name: &str, pdf: &[u8]) {
    let path = write(dir, name, pdf);
    crate::sign_interop::assert_validators_accept(&path, 1, false);
    let report = crate::verify::verify(pdf, &crate::verify::default_store());
    assert!(
        report.signatures[0].timestamp.is_some(),
        "{name}: no signature time-stamp: {:#?}",
        report.signatures[0]
    );
}

/// The signature widget added last and its document.
fn widget(pdf: &[u8]) -> (Document, Dictionary) {
    let doc = Document::load_mem(pdf).unwrap();
    let w = doc
        .objects
        .values()
        .filter_map(|o| o.as_dict().ok())
        .find(|d| {
            d.get(b"FT").and_then(Object::as_name).ok() == Some(b"Sig".as_slice())
                && d.has(b"V")
                && d.get(b"Subtype").and_then(Object::as_name).ok() == Some(b"Widget".as_slice())
        })
        .expect("a signature widget")
        .clone();
    (doc, w)
}

fn rect(w: &Dictionary) -> Vec<f32> {
    w.get(b"Rect")
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o.as_float().unwrap())
        .collect()
}

/// The image XObject drawn by the widget's appearance.
fn appearance_image(doc: &Document, w: &Dictionary) -> lopdf::Stream {
    let ap = w.get(b"AP").unwrap().as_dict().unwrap();
    let n = doc
        .get_object(ap.get(b"N").unwrap().as_reference().unwrap())
        .unwrap();
    let form = n.as_stream().unwrap();
    let res = form.dict.get(b"Resources").unwrap().as_dict().unwrap();
    let xobjects = res
        .get(b"XObject")
        .expect("the appearance names an XObject")
        .as_dict()
        .unwrap();
    let (_, r) = xobjects.iter().next().unwrap();
    let img = doc.get_object(r.as_reference().unwrap()).unwrap();
    img.as_stream().unwrap().clone()
}

fn int(d: &Dictionary, key: &[u8]) -> i64 {
    d.get(key).unwrap().as_i64().unwrap()
}

fn name<'a>(d: &'a Dictionary, key: &[u8]) -> &'a [u8] {
    d.get(key).unwrap().as_name().unwrap()
}

/// Render page 1 at 72 dpi (1 px per point) with poppler, or None when pdftoppm is missing.
fn render(dir: &Path, name: &str, pdf: &[u8]) -> Option<image::RgbImage> {
    if !crate::validators::require("pdfsig") {
        return None; // poppler-utils (pdfsig, pdftoppm) is not installed
    }
    let input = write(dir, &format!("{name}.pdf"), pdf);
    let prefix = dir.join(name);
    let out = std::process::Command::new("pdftoppm")
        .args(["-r", "72", "-f", "1", "-l", "1", "-singlefile", "-png"])
        .arg(&input)
        .arg(&prefix)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pdftoppm: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(image::open(prefix.with_extension("png")).unwrap().to_rgb8())
}

/// The pixel at page point (x, y) (origin bottom left).
fn at(img: &image::RgbImage, x: f32, y: f32) -> [u8; 3] {
    let row = img.height() as f32 - y;
    img.get_pixel(x as u32, row as u32).0
}

/// A 40×20 PNG: the left half opaque red, the right half fully transparent blue.
fn half_transparent_png() -> Vec<u8> {
    let img = image::RgbaImage::from_fn(40, 20, |x, _| {
        if x < 20 {
            image::Rgba([255, 0, 0, 255])
        } else {
            image::Rgba([0, 0, 255, 0])
        }
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// A baseline grey JPEG of `blocks` 8×8 blocks side by side, every sample 128: one quantisation
/// table of ones, one-symbol Huffman tables (DC category 0, AC end-of-block, both coded `0`).
fn grey_jpeg(blocks: u16) -> Vec<u8> {
    let mut b = vec![0xFF, 0xD8];
    // DQT: table 0, 8-bit, all ones.
    b.extend_from_slice(&[0xFF, 0xDB, 0x00, 0x43, 0x00]);
    b.extend_from_slice(&[1; 64]);
    // SOF0: 8-bit, height 8, width 8·blocks, one component (id 1, 1×1 sampling, table 0).
    b.extend_from_slice(&[0xFF, 0xC0, 0x00, 0x0B, 0x08, 0x00, 0x08]);
    b.extend_from_slice(&(8 * blocks).to_be_bytes());
    b.extend_from_slice(&[0x01, 0x01, 0x11, 0x00]);
    // DHT: DC table 0 and AC table 0, each one code of length 1.
    for (class, symbol) in [(0x00, 0x00), (0x10, 0x00)] {
        b.extend_from_slice(&[0xFF, 0xC4, 0x00, 0x14, class, 1]);
        b.extend_from_slice(&[0; 15]);
        b.push(symbol);
    }
    // SOS: one component with tables 0/0, full spectral range.
    b.extend_from_slice(&[0xFF, 0xDA, 0x00, 0x08, 0x01, 0x01, 0x00, 0x00, 0x3F, 0x00]);
    // Per block: DC difference 0 (`0`) and end of block (`0`); pad with one bits.
    let bits = 2 * usize::from(blocks);
    let mut data = vec![0u8; bits.div_ceil(8)];
    let pad = data.len() * 8 - bits;
    if let Some(last) = data.last_mut() {
        *last |= ((1u16 << pad) - 1) as u8;
    }
    b.extend_from_slice(&data);
    b.extend_from_slice(&[0xFF, 0xD9]);
    b
}

async fn signing(db_url: String) {
    let dir = tempdir();
    let app = spawn(config(&db_url, dir.path())).await;
    let original = render(dir.path(), "original", &read("fixtures/pdf/letter.pdf"));

    // Identified by e-mail, INVISIBLE: no appearance, a zero rectangle.
    let email = format!(
        "{}@example.go.id",
        app.creds["signer"]["username"].as_str().unwrap()
    );
    let mut body = request(
        &app,
        json!({"tampilan": "INVISIBLE", "reason": "Disetujui", "location": "Jakarta"}),
    );
    body.as_object_mut().unwrap().remove("nik");
    body["email"] = json!(email);
    let pdf = sign_ok(&app, &body).await;
    assert_accepted(dir.path(), "invisible.pdf", &pdf);
    let (_, w) = widget(&pdf);
    assert!(!w.has(b"AP") && rect(&w).iter().all(|v| *v == 0.0), "{w:?}");
    let report = crate::verify::verify(&pdf, &crate::verify::default_store());
    assert_eq!(
        report.signatures[0]
            .signer
            .as_ref()
            .unwrap()
            .name
            .as_deref(),
        Some("Dr. Budi Santoso, M.Si.")
    );

    // VISIBLE at page/originX/originY/width/height: Segel's stamp in exactly that rectangle.
    let pdf = sign_ok(
        &app,
        &request(&app, json!({"tampilan": "VISIBLE", "page": 1, "originX": 300, "originY": 90, "width": 200, "height": 90})),
    )
    .await;
    assert_accepted(dir.path(), "rect.pdf", &pdf);
    let (doc, w) = widget(&pdf);
    assert_eq!(rect(&w), [300.0, 90.0, 500.0, 180.0]);
    let ap = w.get(b"AP").unwrap().as_dict().unwrap();
    let stamp = doc
        .get_object(ap.get(b"N").unwrap().as_reference().unwrap())
        .unwrap()
        .as_stream()
        .unwrap();
    let text = String::from_utf8_lossy(&stamp.content).to_string();
    assert!(
        text.contains("Budi Santoso") && text.contains("NIP. 197001012000031001"),
        "{text}"
    );

    // VISIBLE with a PNG: the image, with its alpha as a soft mask, fills the rectangle.
    let png = half_transparent_png();
    let pdf = sign_ok(
        &app,
        &request(&app, json!({"tampilan": "VISIBLE", "imageBase64": B64.encode(&png), "page": 1, "originX": 300, "originY": 40, "width": 80, "height": 40})),
    )
    .await;
    assert_accepted(dir.path(), "png.pdf", &pdf);
    let (doc, w) = widget(&pdf);
    assert_eq!(rect(&w), [300.0, 40.0, 380.0, 80.0]);
    let img = appearance_image(&doc, &w);
    assert_eq!(name(&img.dict, b"Subtype"), b"Image");
    assert_eq!(
        (int(&img.dict, b"Width"), int(&img.dict, b"Height")),
        (40, 20)
    );
    assert_eq!(name(&img.dict, b"ColorSpace"), b"DeviceRGB");
    assert_eq!(name(&img.dict, b"Filter"), b"FlateDecode");
    let samples = img.decompressed_content().unwrap();
    assert_eq!(samples.len(), 40 * 20 * 3);
    assert_eq!(&samples[..3], &[255, 0, 0]);
    let mask = doc
        .get_object(img.dict.get(b"SMask").unwrap().as_reference().unwrap())
        .unwrap()
        .as_stream()
        .unwrap();
    assert_eq!(name(&mask.dict, b"ColorSpace"), b"DeviceGray");
    let alpha = mask.decompressed_content().unwrap();
    assert_eq!(
        (alpha[0], alpha[39]),
        (255, 0),
        "left opaque, right transparent"
    );
    if let (Some(before), Some(after)) = (&original, render(dir.path(), "png", &pdf)) {
        // Red where the image is opaque; the page unchanged where it is transparent.
        let red = at(&after, 310.0, 60.0);
        assert!(red[0] > 200 && red[1] < 60 && red[2] < 60, "{red:?}");
        assert_eq!(at(&after, 370.0, 60.0), at(before, 370.0, 60.0));
        assert_ne!(at(before, 310.0, 60.0), red);
    }

    // VISIBLE with a JPEG (data-URL form): embedded unchanged as /DCTDecode.
    let jpeg = grey_jpeg(2);
    let pdf = sign_ok(
        &app,
        &request(&app, json!({"tampilan": "VISIBLE", "imageBase64": format!("data:image/jpeg;base64,{}", B64.encode(&jpeg)), "page": 1, "originX": 420, "originY": 40, "width": 64, "height": 32})),
    )
    .await;
    assert_accepted(dir.path(), "jpeg.pdf", &pdf);
    let (doc, w) = widget(&pdf);
    let img = appearance_image(&doc, &w);
    assert_eq!(name(&img.dict, b"Subtype"), b"Image");
    assert_eq!(
        (int(&img.dict, b"Width"), int(&img.dict, b"Height")),
        (16, 8)
    );
    assert_eq!(name(&img.dict, b"Filter"), b"DCTDecode");
    assert_eq!(name(&img.dict, b"ColorSpace"), b"DeviceGray");
    assert_eq!(img.content, jpeg);
    assert!(!img.dict.has(b"SMask"));
    if let (Some(before), Some(after)) = (&original, render(dir.path(), "jpeg", &pdf)) {
        let grey = at(&after, 452.0, 56.0);
        assert!(grey.iter().all(|c| (100..=156).contains(c)), "{grey:?}");
        assert_ne!(at(before, 452.0, 56.0), grey);
    }

    // tag_koordinat with an image: the image covers the anchor text.
    let pdf = sign_ok(
        &app,
        &request(&app, json!({"tampilan": "VISIBLE", "imageBase64": B64.encode(&png), "tag_koordinat": "${ttd}", "width": 120, "height": 60})),
    )
    .await;
    assert_accepted(dir.path(), "anchor.pdf", &pdf);
    let (doc, w) = widget(&pdf);
    let r = rect(&w);
    assert_eq!(
        ((r[2] - r[0]).round(), (r[3] - r[1]).round()),
        (120.0, 60.0)
    );
    assert_eq!(int(&appearance_image(&doc, &w).dict, b"Width"), 40);
    let hit = segel::pdf::anchor::find_anchor(
        &segel::pdf::ParsedPdf::parse(&read("fixtures/pdf/letter.pdf")).unwrap(),
        "${ttd}",
    )
    .unwrap();
    assert!(
        r[0] <= hit.x && r[2] >= hit.x_end && r[1] <= hit.y && r[3] >= hit.y,
        "{r:?} does not cover the anchor"
    );

    // The verify route answers in BSrE's shape, with the time-stamp under both names.
    let v: Value = app
        .client
        .post(format!("{}/api/v2/verify/pdf", app.base))
        .json(&json!({"file": B64.encode(&pdf)}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["conclusion"], "VALID", "{v}");
    let info = &v["signatureInformations"][0];
    assert_eq!(info["signerName"], "Dr. Budi Santoso, M.Si.");
    assert_eq!(info["integrityValid"], true);
    assert_eq!(info["certificateTrusted"], true);
    assert_eq!(info["modified"], false);
    assert!(info["signatureDate"].is_string(), "{info}");
    assert!(info["timestamp"]["timestampDate"].is_string(), "{info}");
    assert_eq!(info["timestamp"], info["timestampInfomation"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bsre_signing_variants_on_sqlite() {
    let dir = tempdir();
    signing(db::sqlite_url(dir.path())).await;
}

async fn error_code(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let v: Value = r.json().await.unwrap();
    (status, v["error"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bsre_error_shapes() {
    let dir = tempdir();
    let app = spawn(config(&db::sqlite_url(dir.path()), dir.path())).await;
    let visible = |image: &str| json!({"tampilan": "VISIBLE", "imageBase64": image, "page": 1, "originX": 300, "originY": 40, "width": 80, "height": 40});

    let mut wrong = request(&app, json!({"tampilan": "INVISIBLE"}));
    wrong["passphrase"] = json!("bukan-ini");
    let (status, e) = error_code(sign(&app, &wrong).await).await;
    assert_eq!(
        (status, e["code"].as_str()),
        (401, Some("wrong_passphrase")),
        "{e}"
    );
    assert_eq!(e["attempts_left"], 4, "{e}");

    let mut unknown = request(&app, json!({"tampilan": "INVISIBLE"}));
    unknown["nik"] = json!("1111111111111111");
    let (status, e) = error_code(sign(&app, &unknown).await).await;
    assert_eq!(
        (status, e["code"].as_str()),
        (404, Some("user_not_registered")),
        "{e}"
    );
    let mut unknown = request(&app, json!({"tampilan": "INVISIBLE"}));
    unknown.as_object_mut().unwrap().remove("nik");
    unknown["email"] = json!("nobody@example.go.id");
    let (status, e) = error_code(sign(&app, &unknown).await).await;
    assert_eq!(
        (status, e["code"].as_str()),
        (404, Some("user_not_registered")),
        "{e}"
    );

    let mut bad_file = request(&app, json!({"tampilan": "INVISIBLE"}));
    bad_file["file"] = json!(["%%% not base64 %%%"]);
    let (status, e) = error_code(sign(&app, &bad_file).await).await;
    assert_eq!(
        (status, e["code"].as_str()),
        (400, Some("invalid_base64")),
        "{e}"
    );

    let png = half_transparent_png();
    for (what, image) in [
        ("not base64", "%%% not base64 %%%".to_string()),
        (
            "not an image",
            B64.encode(b"GIF89a definitely not a PNG or JPEG"),
        ),
        ("a truncated PNG", B64.encode(&png[..png.len() / 2])),
        ("a corrupt JPEG", B64.encode(&grey_jpeg(2)[..30])),
    ] {
        let (status, e) = error_code(sign(&app, &request(&app, visible(&image))).await).await;
        assert_eq!(
            (status, e["code"].as_str()),
            (400, Some("invalid_image")),
            "{what}: {e}"
        );
    }

    let (status, e) =
        error_code(sign(&app, &request(&app, json!({"tampilan": "VISIBLE"}))).await).await;
    assert_eq!(
        (status, e["code"].as_str()),
        (400, Some("placement_required")),
        "{e}"
    );

    // Two files, the second with a bad image and a wrong passphrase: the request is refused
    // as a whole before the passphrase is tried, so the first file is not signed and no
    // attempt is used up.
    let mut two = request(&app, visible(&B64.encode(&png)));
    two["file"] = json!([two["file"][0], two["file"][0]]);
    two["signatureProperties"] =
        json!([visible(&B64.encode(&png)), visible(&B64.encode(b"GIF89a"))]);
    two["passphrase"] = json!("bukan-ini");
    let (status, e) = error_code(sign(&app, &two).await).await;
    assert_eq!(
        (status, e["code"].as_str()),
        (400, Some("invalid_image")),
        "{e}"
    );
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("signatureProperties[1]"),
        "{e}"
    );
    // Two files with the right passphrase, the second unreadable or without the anchor its
    // placement names: refused as a whole, before the first file is signed.
    let anchored = json!({"tampilan": "VISIBLE", "tag_koordinat": "${ttd}"});
    for (what, second, props, code) in [
        (
            "not a PDF",
            B64.encode(b"%PDF-1.7 and nothing else"),
            anchored.clone(),
            "invalid_pdf",
        ),
        (
            "no such anchor",
            B64.encode(read("fixtures/pdf/letter.pdf")),
            json!({"tampilan": "VISIBLE", "tag_koordinat": "${tidak-ada}"}),
            "invalid_placement",
        ),
    ] {
        let mut two = request(&app, anchored.clone());
        two["file"] = json!([two["file"][0], second]);
        two["signatureProperties"] = json!([anchored, props]);
        let (status, e) = error_code(sign(&app, &two).await).await;
        assert_eq!(
            (status, e["code"].as_str()),
            (422, Some(code)),
            "{what}: {e}"
        );
        assert!(
            e["message"].as_str().unwrap().contains("file[1]") || code == "invalid_pdf",
            "{what}: {e}"
        );
    }
    let (status, e) = error_code(sign(&app, &wrong).await).await;
    assert_eq!((status, e["attempts_left"].as_i64()), (401, Some(3)), "{e}");
    let auditor = app.login("auditor").await;
    let signed: Value = app
        .client
        .get(format!("{}/api/v1/audit?action=document.signed", app.base))
        .bearer_auth(&auditor)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        signed["entries"].as_array().map(Vec::len),
        Some(0),
        "{signed}"
    );

    // Nothing above signed anything; a good request still works (two wrong passphrases only).
    let pdf = sign_ok(&app, &request(&app, visible(&B64.encode(&png)))).await;
    let report = crate::verify::verify(&pdf, &crate::verify::default_store());
    assert!(report.all_valid());
}
