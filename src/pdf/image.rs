//! Raster images for signature appearances (ISO 32000-1 §8.9): a PNG is decoded and written as
//! a Flate-compressed image XObject, its alpha channel as a soft mask (/SMask, §11.6.5.3); a
//! JPEG is embedded as it is with /DCTDecode, its size and colour components read from the
//! start-of-frame marker.

use lopdf::{Dictionary, Object, ObjectId, Stream};

/// Largest accepted image, in pixels per side and in total. A signature specimen is a few
/// hundred pixels wide; the limits keep a hostile file from exhausting memory when decoded.
pub const MAX_SIDE: u32 = 8192;
pub const MAX_PIXELS: u64 = 16 * 1024 * 1024;

/// Why an image cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("the image is neither PNG nor JPEG")]
    UnknownFormat,
    #[error("the PNG image cannot be decoded: {0}")]
    Png(String),
    #[error("the JPEG image cannot be read: {0}")]
    Jpeg(String),
    #[error(
        "the image is {width}×{height} pixels; at most {MAX_SIDE} per side and {MAX_PIXELS} in all"
    )]
    TooLarge { width: u32, height: u32 },
}

/// An image ready to be written into a PDF: the image XObject and, for a PNG with
/// transparency, its soft mask.
#[derive(Debug, Clone)]
pub struct StampImage {
    width: u32,
    height: u32,
    image: Stream,
    smask: Option<Stream>,
}

fn name(s: &str) -> Object {
    Object::Name(s.as_bytes().to_vec())
}

fn check_size(width: u32, height: u32) -> Result<(), ImageError> {
    if width == 0 || height == 0 {
        return Err(ImageError::Png("the image has no pixels".into()));
    }
    if width > MAX_SIDE || height > MAX_SIDE || u64::from(width) * u64::from(height) > MAX_PIXELS {
        return Err(ImageError::TooLarge { width, height });
    }
    Ok(())
}

fn image_dict(width: u32, height: u32, color_space: &str, bits: i64) -> Dictionary {
    let mut d = Dictionary::new();
    d.set("Type", name("XObject"));
    d.set("Subtype", name("Image"));
    d.set("Width", Object::Integer(i64::from(width)));
    d.set("Height", Object::Integer(i64::from(height)));
    d.set("ColorSpace", name(color_space));
    d.set("BitsPerComponent", Object::Integer(bits));
    d
}

/// A Flate-compressed image stream (lopdf keeps the samples raw in the rare case that
/// compression would make them larger; that is valid PDF as well).
fn flate_image(dict: Dictionary, samples: Vec<u8>) -> Result<Stream, ImageError> {
    let mut s = Stream::new(dict, samples);
    s.compress()
        .map_err(|e| ImageError::Png(format!("compressing the samples: {e}")))?;
    Ok(s)
}

impl StampImage {
    /// Read a PNG or JPEG, telling them apart by their signatures.
    pub fn decode(bytes: &[u8]) -> Result<Self, ImageError> {
        if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
            Self::from_png(bytes)
        } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
            Self::from_jpeg(bytes)
        } else {
            Err(ImageError::UnknownFormat)
        }
    }

    /// Decode a PNG (any colour type and bit depth) to 8-bit samples; a non-opaque alpha
    /// channel (or tRNS transparency) becomes the soft mask.
    pub fn from_png(bytes: &[u8]) -> Result<Self, ImageError> {
        let png_err = |e: png::DecodingError| ImageError::Png(e.to_string());
        check_palette_chunks(bytes)?;
        let mut decoder = png::Decoder::new_with_limits(
            std::io::Cursor::new(bytes),
            png::Limits {
                bytes: 4 * MAX_PIXELS as usize + (1 << 20),
            },
        );
        decoder.set_transformations(png::Transformations::normalize_to_color8());
        let header = decoder.read_header_info().map_err(png_err)?;
        check_size(header.width, header.height)?;
        let mut reader = decoder.read_info().map_err(png_err)?;
        let size = reader
            .output_buffer_size()
            .ok_or_else(|| ImageError::Png("the image size overflows".into()))?;
        let mut buf = vec![0; size];
        let frame = reader.next_frame(&mut buf).map_err(png_err)?;
        buf.truncate(frame.buffer_size());
        let (width, height) = (frame.width, frame.height);
        check_size(width, height)?;
        if frame.bit_depth != png::BitDepth::Eight {
            return Err(ImageError::Png(format!(
                "unexpected {:?} samples after normalisation",
                frame.bit_depth
            )));
        }
        let (colors, has_alpha, space) = match frame.color_type {
            png::ColorType::Grayscale => (1, false, "DeviceGray"),
            png::ColorType::GrayscaleAlpha => (1, true, "DeviceGray"),
            png::ColorType::Rgb => (3, false, "DeviceRGB"),
            png::ColorType::Rgba => (3, true, "DeviceRGB"),
            png::ColorType::Indexed => {
                return Err(ImageError::Png(
                    "palette image was not expanded".to_string(),
                ));
            }
        };
        let (samples, alpha) = if has_alpha {
            let pixels = width as usize * height as usize;
            let mut samples = Vec::with_capacity(pixels * colors);
            let mut alpha = Vec::with_capacity(pixels);
            for px in buf.chunks_exact(colors + 1) {
                samples.extend_from_slice(&px[..colors]);
                alpha.push(px[colors]);
            }
            // A fully opaque alpha channel needs no mask.
            let opaque = alpha.iter().all(|&a| a == 255);
            (samples, if opaque { None } else { Some(alpha) })
        } else {
            (buf, None)
        };
        let smask = alpha
            .map(|a| flate_image(image_dict(width, height, "DeviceGray", 8), a))
            .transpose()?;
        let image = flate_image(image_dict(width, height, space, 8), samples)?;
        Ok(StampImage {
            width,
            height,
            image,
            smask,
        })
    }

    /// Embed a JPEG as it is (/DCTDecode), reading width, height and components from the
    /// start-of-frame segment. Baseline and progressive Huffman-coded JPEGs with 8-bit samples
    /// are accepted: those are what PDF readers decode.
    pub fn from_jpeg(bytes: &[u8]) -> Result<Self, ImageError> {
        let frame = jpeg_frame(bytes)?;
        check_size(frame.width, frame.height)?;
        let space = match frame.components {
            1 => "DeviceGray",
            3 => "DeviceRGB",
            4 => "DeviceCMYK",
            n => return Err(ImageError::Jpeg(format!("{n} colour components"))),
        };
        let mut dict = image_dict(frame.width, frame.height, space, 8);
        dict.set("Filter", name("DCTDecode"));
        if frame.components == 4 && frame.adobe {
            // Adobe applications store CMYK JPEGs inverted (APP14 "Adobe" marker).
            dict.set(
                "Decode",
                Object::Array([1, 0, 1, 0, 1, 0, 1, 0].map(Object::Integer).to_vec()),
            );
        }
        Ok(StampImage {
            width: frame.width,
            height: frame.height,
            image: Stream::new(dict, bytes.to_vec()).with_compression(false),
            smask: None,
        })
    }

    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// Whether the image carries a soft mask (transparency).
    pub fn has_mask(&self) -> bool {
        self.smask.is_some()
    }

    /// Write the image (and its soft mask) through `put`, which stores an object and returns
    /// its id; returns the image XObject's id.
    pub fn write_objects(&self, mut put: impl FnMut(Object) -> ObjectId) -> ObjectId {
        let mut image = self.image.clone();
        if let Some(mask) = &self.smask {
            let mask_id = put(Object::Stream(mask.clone()));
            image.dict.set("SMask", Object::Reference(mask_id));
        }
        put(Object::Stream(image))
    }
}

/// Refuse a PLTE chunk whose length is not a multiple of 3 (PNG §11.2.3: a series of 3-byte
/// entries). The `png` crate (0.18) accepts any length from 3 to 768 and then panics while
/// expanding such a palette, so the chunks are walked here first.
fn check_palette_chunks(bytes: &[u8]) -> Result<(), ImageError> {
    let mut at = 8; // after the signature
    while let Some(header) = bytes.get(at..at + 8) {
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
        let kind = &header[4..8];
        if kind == b"PLTE" && len % 3 != 0 {
            return Err(ImageError::Png(format!(
                "the PLTE chunk is {len} bytes, not a whole number of 3-byte entries"
            )));
        }
        if kind == b"IEND" {
            break;
        }
        // Length, type, data and CRC; a chunk running past the end is the decoder's to report.
        match usize::try_from(len)
            .ok()
            .and_then(|l| at.checked_add(12)?.checked_add(l))
        {
            Some(next) => at = next,
            None => break,
        }
    }
    Ok(())
}

/// What the start-of-frame segment of a JPEG says.
struct JpegFrame {
    width: u32,
    height: u32,
    components: u8,
    /// An APP14 "Adobe" segment is present.
    adobe: bool,
}

fn jpeg_frame(b: &[u8]) -> Result<JpegFrame, ImageError> {
    let err = |m: &str| ImageError::Jpeg(m.to_string());
    if !b.starts_with(&[0xFF, 0xD8]) {
        return Err(err("no start-of-image marker"));
    }
    let mut i = 2;
    let mut adobe = false;
    let mut frame: Option<JpegFrame> = None;
    loop {
        // Markers may be preceded by any number of 0xFF fill bytes (ITU T.81 §B.1.1.2).
        if b.get(i) != Some(&0xFF) {
            return Err(err(
                "a marker was expected; the file is damaged or truncated",
            ));
        }
        while b.get(i) == Some(&0xFF) {
            i += 1;
        }
        let marker = *b
            .get(i)
            .ok_or_else(|| err("the file ends inside a marker"))?;
        i += 1;
        match marker {
            // Standalone markers without a length.
            0x01 | 0xD0..=0xD7 => continue,
            0xD8 => return Err(err("a second start-of-image marker")),
            0xD9 => return Err(err("the image ends before any scan")),
            _ => {}
        }
        let len = match b.get(i..i + 2) {
            Some(l) => usize::from(u16::from_be_bytes([l[0], l[1]])),
            None => return Err(err("the file ends inside a segment header")),
        };
        if len < 2 {
            return Err(err("a segment has an invalid length"));
        }
        let seg = b
            .get(i + 2..i + len)
            .ok_or_else(|| err("the file ends inside a segment"))?;
        match marker {
            0xC0..=0xC2 => {
                if frame.is_some() {
                    return Err(err("more than one frame header"));
                }
                if seg.len() < 6 {
                    return Err(err("the frame header is too short"));
                }
                if seg[0] != 8 {
                    return Err(err(&format!(
                        "{}-bit samples (PDF readers decode 8-bit JPEGs)",
                        seg[0]
                    )));
                }
                let height = u32::from(u16::from_be_bytes([seg[1], seg[2]]));
                let width = u32::from(u16::from_be_bytes([seg[3], seg[4]]));
                let components = seg[5];
                if height == 0 {
                    return Err(err("the height is given later in a DNL segment"));
                }
                if seg.len() < 6 + 3 * usize::from(components) {
                    return Err(err("the frame header is too short for its components"));
                }
                frame = Some(JpegFrame {
                    width,
                    height,
                    components,
                    adobe: false,
                });
            }
            0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF => {
                return Err(err(
                    "lossless, hierarchical or arithmetic-coded JPEG is not supported",
                ));
            }
            0xEE if seg.starts_with(b"Adobe") => adobe = true,
            0xDA => {
                let mut f = frame.ok_or_else(|| err("a scan comes before the frame header"))?;
                f.adobe = adobe;
                return Ok(f);
            }
            _ => {}
        }
        i += len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal JPEG header: SOI, APP14 Adobe (optional), SOF0, SOS.
    fn jpeg(width: u16, height: u16, components: u8, adobe: bool, sof: u8) -> Vec<u8> {
        let mut b = vec![0xFF, 0xD8];
        if adobe {
            b.extend_from_slice(&[0xFF, 0xEE, 0x00, 0x0E]);
            b.extend_from_slice(b"Adobe\x00\x64\x00\x00\x00\x00\x02");
        }
        let len = 8 + 3 * u16::from(components);
        b.extend_from_slice(&[0xFF, sof]);
        b.extend_from_slice(&len.to_be_bytes());
        b.push(8);
        b.extend_from_slice(&height.to_be_bytes());
        b.extend_from_slice(&width.to_be_bytes());
        b.push(components);
        for c in 0..components {
            b.extend_from_slice(&[c + 1, 0x11, 0]);
        }
        b.extend_from_slice(&[0xFF, 0xDA, 0x00, 0x08, 0x01, 0x01, 0x00, 0x00, 0x3F, 0x00]);
        b.extend_from_slice(&[0x12, 0x34, 0xFF, 0xD9]);
        b
    }

    #[test]
    fn jpeg_size_and_components_come_from_the_frame_header() {
        let img = StampImage::decode(&jpeg(320, 120, 3, false, 0xC0)).unwrap();
        assert_eq!((img.width(), img.height()), (320, 120));
        assert_eq!(
            img.image
                .dict
                .get(b"ColorSpace")
                .unwrap()
                .as_name()
                .unwrap(),
            b"DeviceRGB"
        );
        assert_eq!(
            img.image.dict.get(b"Filter").unwrap().as_name().unwrap(),
            b"DCTDecode"
        );
        let data = jpeg(320, 120, 3, false, 0xC0);
        assert_eq!(img.image.content, data, "embedded unchanged");

        let cmyk = StampImage::decode(&jpeg(10, 20, 4, true, 0xC2)).unwrap();
        assert_eq!(
            cmyk.image
                .dict
                .get(b"ColorSpace")
                .unwrap()
                .as_name()
                .unwrap(),
            b"DeviceCMYK"
        );
        assert!(cmyk.image.dict.has(b"Decode"));
        let gray = StampImage::decode(&jpeg(10, 20, 1, false, 0xC1)).unwrap();
        assert_eq!(
            gray.image
                .dict
                .get(b"ColorSpace")
                .unwrap()
                .as_name()
                .unwrap(),
            b"DeviceGray"
        );
    }

    fn png(
        width: u32,
        height: u32,
        color: png::ColorType,
        depth: png::BitDepth,
        palette: Option<(&[u8], &[u8])>,
        data: &[u8],
    ) -> Vec<u8> {
        let mut out = Vec::new();
        let mut enc = png::Encoder::new(&mut out, width, height);
        enc.set_color(color);
        enc.set_depth(depth);
        if let Some((plte, trns)) = palette {
            enc.set_palette(plte.to_vec());
            enc.set_trns(trns.to_vec());
        }
        let mut w = enc.write_header().unwrap();
        w.write_image_data(data).unwrap();
        w.finish().unwrap();
        out
    }

    fn samples(s: &Stream) -> Vec<u8> {
        s.decompressed_content().unwrap()
    }

    #[test]
    fn png_colour_types_become_8_bit_samples_and_a_soft_mask() {
        use png::{BitDepth as D, ColorType as C};
        // Palette with one transparent entry: RGB samples plus a mask.
        let p = png(
            2,
            1,
            C::Indexed,
            D::Eight,
            Some((&[255, 0, 0, 0, 0, 255], &[255, 0])),
            &[0, 1],
        );
        let img = StampImage::decode(&p).unwrap();
        assert_eq!(samples(&img.image), [255, 0, 0, 0, 0, 255]);
        assert_eq!(samples(img.smask.as_ref().unwrap()), [255, 0]);
        let mut objects = Vec::new();
        let id = img.write_objects(|o| {
            objects.push(o);
            (objects.len() as u32, 0)
        });
        assert_eq!(id, (2, 0), "the mask is written first");
        let written = objects[1].as_stream().unwrap();
        assert_eq!(
            written.dict.get(b"SMask").unwrap().as_reference().unwrap(),
            (1, 0)
        );

        // 16-bit grey: stripped to 8 bits, no mask.
        let g = png(
            2,
            1,
            C::Grayscale,
            D::Sixteen,
            None,
            &[0xAB, 0xCD, 0x12, 0x34],
        );
        let img = StampImage::decode(&g).unwrap();
        assert_eq!(samples(&img.image), [0xAB, 0x12]);
        assert_eq!(
            img.image
                .dict
                .get(b"ColorSpace")
                .unwrap()
                .as_name()
                .unwrap(),
            b"DeviceGray"
        );
        assert!(!img.has_mask());

        // RGBA that is fully opaque needs no mask.
        let o = png(1, 1, C::Rgba, D::Eight, None, &[1, 2, 3, 255]);
        let img = StampImage::decode(&o).unwrap();
        assert_eq!(samples(&img.image), [1, 2, 3]);
        assert!(!img.has_mask());

        // Samples are Flate-compressed (a tiny image may stay raw when that is smaller).
        let big = png(32, 32, C::Rgb, D::Eight, None, &[200; 32 * 32 * 3]);
        let img = StampImage::decode(&big).unwrap();
        assert_eq!(
            img.image.dict.get(b"Filter").unwrap().as_name().unwrap(),
            b"FlateDecode"
        );
        assert!(img.image.content.len() < 32 * 32 * 3);
        assert_eq!(samples(&img.image), vec![200; 32 * 32 * 3]);

        // Grey with alpha: the alpha becomes the mask.
        let ga = png(2, 1, C::GrayscaleAlpha, D::Eight, None, &[10, 0, 20, 128]);
        let img = StampImage::decode(&ga).unwrap();
        assert_eq!(samples(&img.image), [10, 20]);
        assert_eq!(samples(img.smask.as_ref().unwrap()), [0, 128]);
    }

    #[test]
    fn bad_jpegs_are_refused() {
        assert!(matches!(
            StampImage::decode(&jpeg(10, 10, 3, false, 0xC9)),
            Err(ImageError::Jpeg(_))
        ));
        assert!(matches!(
            StampImage::decode(&jpeg(10, 0, 3, false, 0xC0)),
            Err(ImageError::Jpeg(_))
        ));
        let whole = jpeg(10, 10, 3, false, 0xC0);
        assert!(matches!(
            StampImage::decode(&whole[..12]),
            Err(ImageError::Jpeg(_))
        ));
        assert!(matches!(
            StampImage::decode(&jpeg(9000, 10, 3, false, 0xC0)),
            Err(ImageError::TooLarge { .. })
        ));
        assert!(matches!(
            StampImage::decode(b"GIF89a"),
            Err(ImageError::UnknownFormat)
        ));
        assert!(matches!(
            StampImage::decode(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"),
            Err(ImageError::Png(_))
        ));
    }
}
