//! CTranslate2's `model.bin` format (binary version 6, as its Python converters write it): a
//! header naming the spec, then named variables (shape, type, raw little-endian bytes), then
//! aliases. Written by the conversion, and its variable shapes read back at load time.

use std::collections::HashMap;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;

/// The binary version this module writes and reads.
const BINARY_VERSION: u32 = 6;

/// Element types, numbered as CTranslate2's `DataType` enum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataType {
    /// float32.
    F32 = 0,
    /// int8 (also booleans and enum values).
    I8 = 1,
    /// int16.
    I16 = 2,
    /// float16.
    F16 = 4,
    /// bfloat16.
    BF16 = 5,
}

/// One variable: its name, shape, element type and raw bytes.
pub struct Variable<'a> {
    /// Scoped name, for example `encoder/layer_0/ffn/linear_0/weight`.
    pub name: String,
    /// Dimensions (empty for a scalar).
    pub shape: Vec<usize>,
    /// Element type.
    pub dtype: DataType,
    /// Little-endian element bytes.
    pub bytes: std::borrow::Cow<'a, [u8]>,
}

impl Variable<'static> {
    /// An int8 scalar (CTranslate2 stores flags and enum values so).
    pub fn int8(name: &str, value: i8) -> Variable<'static> {
        Variable {
            name: name.into(),
            shape: Vec::new(),
            dtype: DataType::I8,
            bytes: vec![value as u8].into(),
        }
    }

    /// An int16 scalar.
    pub fn int16(name: &str, value: i16) -> Variable<'static> {
        Variable {
            name: name.into(),
            shape: Vec::new(),
            dtype: DataType::I16,
            bytes: value.to_le_bytes().to_vec().into(),
        }
    }
}

fn write_string(out: &mut impl Write, s: &str) -> std::io::Result<()> {
    out.write_all(&((s.len() + 1) as u16).to_le_bytes())?;
    out.write_all(s.as_bytes())?;
    out.write_all(&[0])
}

fn io_u32(v: usize, what: &str) -> std::io::Result<u32> {
    u32::try_from(v).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{what} {v} does not fit the model.bin format"),
        )
    })
}

/// Writes `variables` (sorted by name, as CTranslate2 does) as the spec `spec_name`.
pub fn write(path: &Path, spec_name: &str, mut variables: Vec<Variable>) -> std::io::Result<()> {
    variables.sort_by(|a, b| a.name.cmp(&b.name));
    let mut out = BufWriter::new(std::fs::File::create(path)?);
    out.write_all(&BINARY_VERSION.to_le_bytes())?;
    write_string(&mut out, spec_name)?;
    out.write_all(&1u32.to_le_bytes())?; // spec revision
    out.write_all(&io_u32(variables.len(), "variable count")?.to_le_bytes())?;
    for v in &variables {
        write_string(&mut out, &v.name)?;
        out.write_all(&[v.shape.len() as u8])?;
        for &d in &v.shape {
            out.write_all(&io_u32(d, "dimension")?.to_le_bytes())?;
        }
        out.write_all(&[v.dtype as u8])?;
        out.write_all(&io_u32(v.bytes.len(), "variable size")?.to_le_bytes())?;
        out.write_all(&v.bytes)?;
    }
    out.write_all(&0u32.to_le_bytes())?; // no aliases
    out.into_inner()?.sync_all()
}

fn read_u8(r: &mut impl Read) -> std::io::Result<u8> {
    let mut b = [0u8; 1];
    r.read_exact(&mut b)?;
    Ok(b[0])
}

fn read_u16(r: &mut impl Read) -> std::io::Result<u16> {
    let mut b = [0u8; 2];
    r.read_exact(&mut b)?;
    Ok(u16::from_le_bytes(b))
}

fn read_u32(r: &mut impl Read) -> std::io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_le_bytes(b))
}

fn read_string(r: &mut impl Read) -> std::io::Result<String> {
    let n = read_u16(r)? as usize;
    let mut b = vec![0u8; n];
    r.read_exact(&mut b)?;
    b.pop(); // the terminating NUL
    String::from_utf8(b).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// The shapes of every variable in a `model.bin`, reading headers only.
pub fn read_shapes(path: &Path) -> std::io::Result<HashMap<String, Vec<usize>>> {
    let mut r = BufReader::new(std::fs::File::open(path)?);
    let version = read_u32(&mut r)?;
    if !(5..=BINARY_VERSION).contains(&version) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("model.bin binary version {version}; this backend reads versions 5 to 6"),
        ));
    }
    let _spec = read_string(&mut r)?;
    let _revision = read_u32(&mut r)?;
    let count = read_u32(&mut r)?;
    let mut shapes = HashMap::new();
    for _ in 0..count {
        let name = read_string(&mut r)?;
        let rank = read_u8(&mut r)?;
        let shape = (0..rank)
            .map(|_| read_u32(&mut r).map(|d| d as usize))
            .collect::<std::io::Result<Vec<_>>>()?;
        let _dtype = read_u8(&mut r)?;
        let bytes = read_u32(&mut r)?;
        r.seek(SeekFrom::Current(i64::from(bytes)))?;
        shapes.insert(name, shape);
    }
    // Aliases name a variable stored under another name (identical weights stored once).
    if let Ok(aliases) = read_u32(&mut r) {
        for _ in 0..aliases {
            let alias = read_string(&mut r)?;
            let target = read_string(&mut r)?;
            if let Some(shape) = shapes.get(&target).cloned() {
                shapes.insert(alias, shape);
            }
        }
    }
    Ok(shapes)
}
