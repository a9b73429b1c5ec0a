//! Parquet files as the Hugging Face Hub's image datasets hold them — a
//! column `image {bytes, path}` with PNG bytes and an int64 `label` — for the
//! tests of `fm data fetch` (fm-data's and fm-cli's).

#![allow(dead_code)]

use std::io::Cursor;
use std::sync::Arc;

use parquet::data_type::{ByteArray, ByteArrayType, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;

/// PNG bytes of channel-major pixels (grey for `c = 1`, RGB for `c = 3`).
pub fn png(px: &[u8], c: usize, side: usize) -> Vec<u8> {
    let s = side as u32;
    let img = if c == 1 {
        image::DynamicImage::ImageLuma8(image::GrayImage::from_raw(s, s, px.to_vec()).expect("size"))
    } else {
        let hw = side * side;
        let interleaved: Vec<u8> = (0..hw).flat_map(|p| (0..3).map(move |ch| px[ch * hw + p])).collect();
        image::DynamicImage::ImageRgb8(image::RgbImage::from_raw(s, s, interleaved).expect("size"))
    };
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageOutputFormat::Png).expect("png");
    out.into_inner()
}

/// A parquet file as the Hub's image datasets hold them: `image {bytes, path}`, `label`.
pub fn parquet_file(images: &[Vec<u8>], labels: &[i64]) -> Vec<u8> {
    let schema = parse_message_type(
        "message schema { optional group image { optional binary bytes; optional binary path (STRING); } optional int64 label; }",
    )
    .expect("schema");
    let props = Arc::new(WriterProperties::builder().build());
    let mut out = Vec::new();
    {
        let mut w = SerializedFileWriter::new(&mut out, Arc::new(schema), props).expect("writer");
        let mut rg = w.next_row_group().expect("row group");
        let n = images.len();
        let mut col = rg.next_column().expect("column").expect("image.bytes");
        let values: Vec<ByteArray> = images.iter().map(|b| ByteArray::from(b.clone())).collect();
        col.typed::<ByteArrayType>().write_batch(&values, Some(&vec![2; n]), None).expect("bytes");
        col.close().expect("close");
        let mut col = rg.next_column().expect("column").expect("image.path");
        col.typed::<ByteArrayType>().write_batch(&[], Some(&vec![1; n]), None).expect("path");
        col.close().expect("close");
        let mut col = rg.next_column().expect("column").expect("label");
        col.typed::<Int64Type>().write_batch(labels, Some(&vec![1; n]), None).expect("label");
        col.close().expect("close");
        rg.close().expect("close");
        w.close().expect("close");
    }
    out
}
