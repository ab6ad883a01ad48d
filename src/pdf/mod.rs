//! PDF side of signing: parse and check the input, append an incremental update (ISO 32000-1
//! §7.5.6) holding the signature field, widget and signature dictionary, reserve and fill
//! /Contents, draw the visible stamp, and find anchor text.

pub mod anchor;
pub mod appearance;
pub mod diff;
mod fonts;
pub mod image;
pub mod parse;
pub mod sign;
pub mod signatures;
pub mod writer;

pub use image::{ImageError, StampImage};
pub use parse::ParsedPdf;
pub use sign::{Certification, Placement, SignRequest, StampText, Visibility, sign_pdf};

/// Why a PDF could not be read or signed. Messages name the object or field at fault.
#[derive(Debug, thiserror::Error)]
pub enum PdfError {
    #[error("the file is empty")]
    Empty,
    #[error("not a PDF file (no %PDF- header)")]
    NotPdf,
    #[error("the file is truncated or has no valid trailer: {0}")]
    Truncated(String),
    #[error(
        "the cross-reference data is damaged ({0}); refusing to append to a file that needs repair"
    )]
    XrefDamaged(String),
    #[error("the document is encrypted; decrypt it before signing")]
    Encrypted,
    #[error("the PDF cannot be parsed: {0}")]
    Malformed(String),
    #[error(
        "the document is certified with DocMDP P=1 (no changes allowed); it cannot be signed again"
    )]
    CertifiedNoChanges,
    #[error(
        "the document is certified (DocMDP P={0}): a new visible signature field is not permitted after certification; sign an existing empty field (--field) or sign invisibly"
    )]
    CertifiedNewVisibleField(i64),
    #[error(
        "a certification signature must be the first signature; this document is already signed"
    )]
    CertifyAfterSignature,
    #[error("signature field {0:?} already exists and is signed")]
    FieldSigned(String),
    #[error("page {page} does not exist (the document has {count} pages)")]
    NoSuchPage { page: u32, count: usize },
    #[error("anchor text {0:?} was not found on any page")]
    AnchorNotFound(String),
    #[error("invalid placement: {0}")]
    Placement(String),
    #[error("the signature ({needed} bytes) does not fit the reserved space ({reserved} bytes)")]
    ContentsTooSmall { needed: usize, reserved: usize },
    #[error(transparent)]
    Cms(#[from] crate::cms::CmsError),
}

impl From<lopdf::Error> for PdfError {
    fn from(e: lopdf::Error) -> Self {
        PdfError::Malformed(e.to_string())
    }
}
