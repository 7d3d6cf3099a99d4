//! The QR codes decode, with an independent decoder, to exactly the printed link.

use healthlock_tests::{Server, User};

fn decode(width: usize, height: usize, luma: impl Fn(usize, usize) -> u8) -> String {
    let mut img = rqrr::PreparedImage::prepare_from_greyscale(width, height, luma);
    let grids = img.detect_grids();
    assert_eq!(grids.len(), 1, "one QR code in the image");
    grids[0].decode().expect("decodes").1
}

fn decode_png(path: &std::path::Path) -> String {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(info.color_type, png::ColorType::Grayscale);
    let w = info.width as usize;
    decode(w, info.height as usize, |x, y| buf[y * w + x])
}

/// Rasterises the SVG's rectangles (`M x y h w v h H x V y`) at 4 px per unit.
fn decode_svg(path: &std::path::Path) -> String {
    let svg = std::fs::read_to_string(path).unwrap();
    let attr = |name: &str| -> usize {
        let start = svg.find(&format!(" {name}=\"")).unwrap() + name.len() + 3;
        svg[start..].split('"').next().unwrap().parse().unwrap()
    };
    let (w, h) = (attr("width"), attr("height"));
    let scale = 4;
    let mut px = vec![255u8; w * h * scale * scale];
    let d_start = svg.find(" d=\"").unwrap() + 4;
    let d = svg[d_start..].split('"').next().unwrap();
    for rect in d.split('M').filter(|s| !s.is_empty()) {
        let nums: Vec<usize> = rect
            .split(|c: char| c.is_ascii_alphabetic() || c == ' ')
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().unwrap())
            .collect();
        let (x, y, rw, rh) = (nums[0], nums[1], nums[2], nums[3]);
        for yy in y * scale..(y + rh) * scale {
            for xx in x * scale..(x + rw) * scale {
                px[yy * w * scale + xx] = 0;
            }
        }
    }
    decode(w * scale, h * scale, |x, y| px[y * w * scale + x])
}

#[test]
fn png_and_svg_qr_codes_decode_to_the_link() {
    let server = Server::start();
    let alice = User::patient(&server, "alice");
    let id = alice.upload(&alice.file("rx.pdf", b"Rx"), "prescription", None);
    let share = alice.share(
        &[&id],
        "pharmacist",
        &["--qr-png", "share.png", "--qr-svg", "share.svg"],
    );
    let link = share["link"].as_str().unwrap();
    assert_eq!(decode_png(&alice.dir().join("share.png")), link);
    assert_eq!(decode_svg(&alice.dir().join("share.svg")), link);
}
