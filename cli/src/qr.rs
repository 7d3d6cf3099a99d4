//! QR codes of a share link: drawn in the terminal, or written as SVG or PNG files.

use anyhow::{Context, Result};
use qrcode::{Color, EcLevel, QrCode};
use std::path::Path;

/// Pixels per module in the PNG.
const SCALE: usize = 8;
/// Modules of quiet zone around the code, as the standard asks.
const QUIET: usize = 4;

fn code(link: &str) -> Result<QrCode> {
    QrCode::with_error_correction_level(link.as_bytes(), EcLevel::M)
        .context("the link is too long for a QR code")
}

/// Writes the QR code of `link` as an SVG file.
pub fn write_svg(link: &str, path: &Path) -> Result<()> {
    let svg = code(link)?
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(256, 256)
        .quiet_zone(true)
        .build();
    std::fs::write(path, svg).with_context(|| format!("cannot write {}", path.display()))
}

/// Writes the QR code of `link` as a grayscale PNG file.
pub fn write_png(link: &str, path: &Path) -> Result<()> {
    let code = code(link)?;
    let width = code.width();
    let colors = code.to_colors();
    let side = (width + 2 * QUIET) * SCALE;
    let mut pixels = vec![255u8; side * side];
    for (i, c) in colors.iter().enumerate() {
        if *c == Color::Dark {
            let (mx, my) = (i % width + QUIET, i / width + QUIET);
            for y in my * SCALE..(my + 1) * SCALE {
                pixels[y * side + mx * SCALE..y * side + (mx + 1) * SCALE].fill(0);
            }
        }
    }
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot write {}", path.display()))?;
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), side as u32, side as u32);
    enc.set_color(png::ColorType::Grayscale);
    enc.set_depth(png::BitDepth::Eight);
    let mut w = enc.write_header()?;
    w.write_image_data(&pixels)?;
    w.finish()?;
    Ok(())
}

/// Draws the QR code in the terminal (stdout).
pub fn print_terminal(link: &str) {
    if let Err(e) = qr2term::print_qr(link) {
        eprintln!("warning: cannot draw the QR code here: {e}");
    }
}
