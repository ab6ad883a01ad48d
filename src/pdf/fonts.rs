//! Glyph widths of the standard 14 fonts Segel draws with (from the Adobe Core 14 AFM metrics,
//! in 1/1000 text space units), and WinAnsi encoding of text for them.

/// Helvetica widths for codes 32..=126.
const HELVETICA: [u16; 95] = [
    278, 278, 355, 556, 556, 889, 667, 191, 333, 333, 389, 584, 278, 333, 278, 278, // 32-47
    556, 556, 556, 556, 556, 556, 556, 556, 556, 556, 278, 278, 584, 584, 584, 556, // 48-63
    1015, 667, 667, 722, 722, 667, 611, 778, 722, 278, 500, 667, 556, 833, 722, 778, // 64-79
    667, 778, 722, 667, 611, 722, 667, 944, 667, 667, 611, 278, 278, 278, 469, 556, // 80-95
    333, 556, 556, 500, 556, 556, 278, 556, 556, 222, 222, 500, 222, 833, 556, 556, // 96-111
    556, 556, 333, 500, 278, 556, 500, 722, 500, 500, 500, 334, 260, 334, 584, // 112-126
];

/// Helvetica-Bold widths for codes 32..=126.
const HELVETICA_BOLD: [u16; 95] = [
    278, 333, 474, 556, 556, 889, 722, 238, 333, 333, 389, 584, 278, 333, 278, 278, // 32-47
    556, 556, 556, 556, 556, 556, 556, 556, 556, 556, 333, 333, 584, 584, 584, 611, // 48-63
    975, 722, 722, 722, 722, 667, 611, 778, 722, 278, 556, 722, 611, 833, 722, 778, // 64-79
    667, 778, 722, 667, 611, 722, 667, 944, 667, 667, 611, 333, 278, 333, 584, 556, // 80-95
    333, 556, 611, 556, 611, 556, 333, 611, 611, 278, 278, 556, 278, 889, 611, 611, // 96-111
    611, 611, 389, 556, 333, 611, 556, 778, 556, 556, 500, 389, 280, 389, 584, // 112-126
];

/// A standard font used in Segel's appearance streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Font {
    Helvetica,
    HelveticaBold,
}

impl Font {
    /// The resource name used in appearance streams.
    pub fn resource(self) -> &'static str {
        match self {
            Font::Helvetica => "F1",
            Font::HelveticaBold => "F2",
        }
    }

    /// The /BaseFont name.
    pub fn base_font(self) -> &'static str {
        match self {
            Font::Helvetica => "Helvetica",
            Font::HelveticaBold => "Helvetica-Bold",
        }
    }

    /// Width of one WinAnsi code in 1/1000 em.
    pub fn code_width(self, code: u8) -> u16 {
        let table = match self {
            Font::Helvetica => &HELVETICA,
            Font::HelveticaBold => &HELVETICA_BOLD,
        };
        match code {
            32..=126 => table[usize::from(code - 32)],
            _ => 556,
        }
    }

    /// Width of `text` at `size` points.
    pub fn text_width(self, text: &str, size: f32) -> f32 {
        win_ansi(text)
            .iter()
            .map(|&c| f32::from(self.code_width(c)))
            .sum::<f32>()
            * size
            / 1000.0
    }
}

/// Helvetica width of one byte, for estimating text positions in pages that use other fonts.
pub fn fallback_width(code: u8) -> u16 {
    Font::Helvetica.code_width(code)
}

/// Encode text in WinAnsiEncoding (ISO 32000-1 Annex D): Latin-1 as is, a few typographic
/// characters at their WinAnsi codes, anything else as '?'.
pub fn win_ansi(text: &str) -> Vec<u8> {
    text.chars()
        .map(|c| match c {
            ' '..='~' => c as u8,
            '\u{a0}'..='\u{ff}' => c as u32 as u8,
            '\u{2013}' => 0x96,
            '\u{2014}' => 0x97,
            '\u{2018}' => 0x91,
            '\u{2019}' => 0x92,
            '\u{201c}' => 0x93,
            '\u{201d}' => 0x94,
            '\u{2022}' => 0x95,
            '\u{2026}' => 0x85,
            '\u{20ac}' => 0x80,
            _ => b'?',
        })
        .collect()
}

/// Greedy word wrap of `text` to lines no wider than `width` points.
pub fn wrap(font: Font, text: &str, size: f32, width: f32) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        let candidate = if line.is_empty() {
            word.to_string()
        } else {
            format!("{line} {word}")
        };
        if font.text_width(&candidate, size) <= width || line.is_empty() {
            line = candidate;
        } else {
            lines.push(std::mem::take(&mut line));
            line = word.to_string();
        }
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widths_match_the_afm_for_known_glyphs() {
        assert_eq!(Font::Helvetica.code_width(b'A'), 667);
        assert_eq!(Font::HelveticaBold.code_width(b'm'), 889);
        assert_eq!(Font::Helvetica.code_width(b'~'), 584);
        assert!((Font::Helvetica.text_width("ii", 10.0) - 4.44).abs() < 1e-3);
    }

    #[test]
    fn wrap_never_exceeds_the_width_unless_a_word_is_longer() {
        let lines = wrap(
            Font::Helvetica,
            "Dokumen ini telah ditandatangani secara elektronik",
            8.0,
            80.0,
        );
        assert!(lines.len() > 1);
        for l in &lines {
            assert!(Font::Helvetica.text_width(l, 8.0) <= 80.0 || !l.contains(' '));
        }
        assert_eq!(
            lines.join(" "),
            "Dokumen ini telah ditandatangani secara elektronik"
        );
    }
}
