//! CIFAR's "python version" batches, read through the crate's one pickle reader
//! ([`crate::pickle`]), which never imports or calls anything.
//!
//! The official CIFAR batches are Python 2 `cPickle` dumps (protocol 2) of a dict holding a
//! numpy `uint8` array and lists; re-dumped copies made with Python 3 use protocol 2 to 4. The
//! reader leaves every call as an opaque placeholder; this module interprets the tree it
//! returns, allowing only the callables such dumps contain:
//!
//! - `numpy.core.multiarray._reconstruct` (numpy 2 writes `numpy._core.multiarray`) of
//!   `numpy.ndarray`, with the state its `BUILD` set: an array of that shape, dtype and bytes;
//!   only C-ordered `uint8` arrays are accepted;
//! - `numpy.dtype`, inside such an array's state: the dtype's name (e.g. `u1`);
//! - `_codecs.encode(text, "latin1")` and `__builtin__.bytes()`: how Python 3 writes `bytes`
//!   under protocol 2.
//!
//! Any other callable, global or value kind (sets, torch tensors, integers past 64 bits) is an
//! error saying the file is not a CIFAR pickle. The reader bounds what hostile input can
//! allocate; containers here may nest at most [`MAX_DEPTH`] deep.

use std::path::Path;

use crate::error::{ProcoError, Result};
use crate::pickle::{self as vm, PickleError};

/// Deepest container nesting accepted. A CIFAR dict nests 4 deep (dict, array state tuple,
/// dtype, dtype state tuple).
pub const MAX_DEPTH: usize = 32;

/// A Python object of a CIFAR pickle.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `None`.
    None,
    /// `True` / `False`.
    Bool(bool),
    /// An integer that fits in 64 bits (larger ones are refused).
    Int(i64),
    /// A float.
    Float(f64),
    /// A byte string: a Python 3 `bytes`, or a Python 2 `str` that is not UTF-8.
    Bytes(Vec<u8>),
    /// A text string (Python 2 `unicode`, Python 3 `str`, or a UTF-8 Python 2 `str`).
    Str(String),
    /// A tuple.
    Tuple(Vec<Value>),
    /// A list.
    List(Vec<Value>),
    /// A dict, as (key, value) pairs in insertion order; a repeated key keeps every pair, and
    /// [`Value::get`] returns the last, as Python would.
    Dict(Vec<(Value, Value)>),
    /// A numpy `uint8` array in C order.
    Array(NdArray),
}

/// A C-ordered numpy array of `uint8`.
#[derive(Debug, Clone, PartialEq)]
pub struct NdArray {
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// The elements in C (row-major) order; `data.len()` is the product of `shape`.
    pub data: Vec<u8>,
}

impl Value {
    /// The value stored under `key` in a dict, whether the key was pickled as a byte string
    /// (Python 2 `str`, or Python 3 `bytes`) or as text. `None` if this is not a dict or the
    /// key is absent.
    pub fn get(&self, key: &str) -> Option<&Value> {
        let Value::Dict(pairs) = self else { return None };
        pairs.iter().rev().find(|(k, _)| k.text_bytes() == Some(key.as_bytes())).map(|(_, v)| v)
    }

    /// The bytes of a byte string or the UTF-8 bytes of a text string.
    pub fn text_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bytes(b) => Some(b),
            Value::Str(s) => Some(s.as_bytes()),
            _ => None,
        }
    }

    /// The items of a list or tuple.
    pub fn items(&self) -> Option<&[Value]> {
        match self {
            Value::List(v) | Value::Tuple(v) => Some(v),
            _ => None,
        }
    }
}

/// Parses one CIFAR pickle from `bytes`, read from `path` (used in error messages only).
///
/// Fails with [`ProcoError::Data`] naming `path` on a truncated or malformed pickle (with the
/// byte offset), on any opcode the reader does not know, on any callable or value outside the
/// subset described in the module documentation, and past the reader's size limits or
/// [`MAX_DEPTH`].
pub fn parse(bytes: &[u8], path: &Path) -> Result<Value> {
    let fail = |reason: String| ProcoError::Data { path: path.to_path_buf(), reason };
    let tree = vm::load(bytes).map_err(|e| fail(reader_error(&e)))?;
    interpret(tree, 0).map_err(|reason| fail(format!("pickle: {reason}")))
}

/// The reader's error in this module's words: the byte offset first, as every CIFAR pickle
/// error reads.
fn reader_error(e: &PickleError) -> String {
    match e {
        PickleError::Truncated(at) => format!("pickle byte {at}: truncated: the pickle ends before its STOP"),
        PickleError::LengthExceeds { at, len, left } => format!("pickle byte {at}: truncated: length {len} exceeds the {left} bytes left"),
        PickleError::Unsupported { op, at } => format!("pickle byte {at}: unsupported opcode 0x{op:02x}: not a CIFAR pickle"),
        PickleError::Malformed { at, reason } => format!("pickle byte {at}: {reason}"),
    }
}

/// The reader's tree as CIFAR values; `Err` says what is not CIFAR.
fn interpret(v: vm::Value, depth: usize) -> std::result::Result<Value, String> {
    if depth > MAX_DEPTH {
        return Err(format!("containers nested more than {MAX_DEPTH} deep: not a CIFAR pickle"));
    }
    let all = |items: Vec<vm::Value>| items.into_iter().map(|x| interpret(x, depth + 1)).collect::<std::result::Result<Vec<_>, _>>();
    Ok(match v {
        vm::Value::None => Value::None,
        vm::Value::Bool(b) => Value::Bool(b),
        vm::Value::Int(i) => Value::Int(i),
        vm::Value::Float(f) => Value::Float(f),
        vm::Value::Str(s) => Value::Str(s),
        vm::Value::Bytes(b) => Value::Bytes(b),
        vm::Value::Tuple(items) => Value::Tuple(all(items)?),
        vm::Value::List(items) => Value::List(all(items)?),
        vm::Value::Dict(pairs) => {
            let mut out = Vec::with_capacity(pairs.len());
            for (k, x) in pairs {
                out.push((interpret(k, depth + 1)?, interpret(x, depth + 1)?));
            }
            Value::Dict(out)
        }
        vm::Value::Opaque { global, args, state } => call(&global, *args, state.map(|s| *s), depth)?,
        vm::Value::BigInt(_) => return Err("an integer that does not fit in 64 bits: not a CIFAR pickle".into()),
        vm::Value::Global(g) => return Err(format!("the global {g}, which a CIFAR pickle does not contain")),
        other => return Err(format!("{}, which a CIFAR pickle does not contain", other.describe())),
    })
}

/// One of the calls a CIFAR pickle contains, applied to its (uninterpreted) arguments.
fn call(global: &str, args: vm::Value, state: Option<vm::Value>, depth: usize) -> std::result::Result<Value, String> {
    let vm::Value::Tuple(args) = args else { return Err(format!("call of {global} without a tuple of arguments: not a CIFAR pickle")) };
    match global {
        "numpy.core.multiarray._reconstruct" | "numpy._core.multiarray._reconstruct" => {
            if !matches!(args.first(), Some(vm::Value::Global(g)) if g == "numpy.ndarray") {
                return Err("_reconstruct of something other than numpy.ndarray: not a CIFAR pickle".into());
            }
            let state = state.ok_or("a numpy array without its state (no BUILD)")?;
            array_state(state, depth + 1).map(Value::Array)
        }
        "_codecs.encode" => codecs_encode(args),
        "__builtin__.bytes" | "builtins.bytes" if args.is_empty() => Ok(Value::Bytes(Vec::new())),
        _ => Err(format!("call of {global}, which a CIFAR pickle does not contain")),
    }
}

/// `_codecs.encode(text, "latin1")`: Python 3's protocol-2 spelling of `bytes`.
fn codecs_encode(args: Vec<vm::Value>) -> std::result::Result<Value, String> {
    let mut args = args.into_iter();
    let (Some(vm::Value::Str(text)), Some(vm::Value::Str(enc))) = (args.next(), args.next()) else {
        return Err("_codecs.encode without (text, encoding) arguments".into());
    };
    if !matches!(enc.as_str(), "latin1" | "latin-1" | "iso-8859-1") {
        return Err(format!("_codecs.encode to {enc:?}: only latin1 is used for bytes"));
    }
    let bytes: Option<Vec<u8>> = text.chars().map(|c| u8::try_from(u32::from(c)).ok()).collect();
    bytes.map(Value::Bytes).ok_or_else(|| "_codecs.encode of text outside latin1".into())
}

/// ndarray.__setstate__: `(version, shape, dtype, is_fortran, data)` or the same without the
/// version.
fn array_state(state: vm::Value, depth: usize) -> std::result::Result<NdArray, String> {
    let vm::Value::Tuple(mut fields) = state else { return Err("numpy array state is not a tuple".into()) };
    match fields.len() {
        5 => drop(fields.remove(0)),
        4 => {}
        n => return Err(format!("numpy array state has {n} fields, expected 4 or 5")),
    }
    let shape = shape(&fields[0])?;
    match dtype_name(&fields[1]) {
        Some("u1" | "|u1") => {}
        Some(d) => return Err(format!("numpy array of dtype {d}; CIFAR pixels are uint8 (u1)")),
        None => return Err("numpy array state without a dtype".into()),
    }
    let fortran = match fields[2] {
        vm::Value::Bool(b) => b,
        vm::Value::Int(i) => i != 0,
        _ => return Err("numpy array state: is_fortran is not a bool".into()),
    };
    if fortran && shape.len() > 1 {
        return Err("Fortran-ordered numpy array; CIFAR data is C-ordered".into());
    }
    // Python 3 bytes (BINBYTES or _codecs.encode), or a Python 2 str.
    let data = match interpret(fields.swap_remove(3), depth + 1)? {
        Value::Bytes(b) => b,
        Value::Str(s) => s.into_bytes(),
        _ => return Err("numpy array data is not a byte string".into()),
    };
    let expected = shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    if expected != Some(data.len()) {
        return Err(format!("numpy array of shape {shape:?} holds {} bytes", data.len()));
    }
    Ok(NdArray { shape, data })
}

/// The name of `numpy.dtype(name, ...)` (its BUILD state, byte order and fields, does not
/// matter for uint8).
fn dtype_name(v: &vm::Value) -> Option<&str> {
    match v {
        vm::Value::Opaque { global, args, .. } if global == "numpy.dtype" => match &**args {
            vm::Value::Tuple(a) => match a.first() {
                Some(vm::Value::Str(name)) => Some(name),
                Some(vm::Value::Bytes(name)) => std::str::from_utf8(name).ok(),
                _ => None,
            },
            _ => None,
        },
        _ => None,
    }
}

fn shape(v: &vm::Value) -> std::result::Result<Vec<usize>, String> {
    let (vm::Value::Tuple(dims) | vm::Value::List(dims)) = v else { return Err("numpy array shape is not a tuple".into()) };
    dims.iter()
        .map(|d| match d {
            vm::Value::Int(i) => usize::try_from(*i).map_err(|_| format!("negative array dimension {i}")),
            _ => Err("numpy array dimension is not an integer".into()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(bytes: &[u8]) -> Result<Value> {
        parse(bytes, Path::new("x.pkl"))
    }

    /// Python 3 `pickle.dumps({b'data': np.arange(6, dtype=np.uint8).reshape(2, 3),
    /// b'labels': [1, 300, 70000]}, protocol=2)` with numpy 2 (bytes keys go through
    /// `_codecs.encode`).
    const PY3_PROTO2: &[u8] = b"\x80\x02}q\x00(c_codecs\x0aencode\x0aq\x01X\x04\x00\x00\x00dataq\x02X\x06\x00\x00\x00latin1q\x03\x86q\x04Rq\x05cnumpy._core.multiarray\x0a_reconstruct\x0aq\x06cnumpy\x0andarray\x0aq\x07K\x00\x85q\x08h\x01X\x01\x00\x00\x00bq\x09h\x03\x86q\x0aRq\x0b\x87q\x0cRq\x0d(K\x01K\x02K\x03\x86q\x0ecnumpy\x0adtype\x0aq\x0fX\x02\x00\x00\x00u1q\x10\x89\x88\x87q\x11Rq\x12(K\x03X\x01\x00\x00\x00|q\x13NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tq\x14b\x89h\x01X\x06\x00\x00\x00\x00\x01\x02\x03\x04\x05q\x15h\x03\x86q\x16Rq\x17tq\x18bh\x01X\x06\x00\x00\x00labelsq\x19h\x03\x86q\x1aRq\x1b]q\x1c(K\x01M,\x01Jp\x11\x01\x00eu.";

    #[test]
    fn python3_protocol2_dict_with_array() {
        let v = p(PY3_PROTO2).unwrap();
        let Some(Value::Array(a)) = v.get("data") else { panic!("{v:?}") };
        assert_eq!(a.shape, vec![2, 3]);
        assert_eq!(&a.data[..], &[0, 1, 2, 3, 4, 5]);
        let labels = v.get("labels").and_then(Value::items).unwrap();
        assert_eq!(labels, &[Value::Int(1), Value::Int(300), Value::Int(70000)]);
    }

    #[test]
    fn every_truncation_is_an_error_naming_the_file() {
        for n in 0..PY3_PROTO2.len() {
            let err = p(&PY3_PROTO2[..n]).unwrap_err();
            assert!(err.to_string().starts_with("x.pkl: pickle byte"), "{n}: {err}");
        }
    }

    #[test]
    fn scalars_and_protocol_4_opcodes() {
        // PROTO 4, FRAME, (SHORT_BINUNICODE 'a', MEMOIZE, LONG1 -2, BINFLOAT 1.5, NEWTRUE,
        // NONE, INT 01, SHORT_BINBYTES, BINGET 0, TUPLE) STOP.
        let mut b = b"\x80\x04\x95\x20\x00\x00\x00\x00\x00\x00\x00(\x8c\x01a\x94\x8a\x01\xfeG\x3f\xf8\x00\x00\x00\x00\x00\x00\x88NI01\nC\x01zh\x00t.".to_vec();
        b[3] = u8::try_from(b.len() - 11).unwrap();
        let v = p(&b).unwrap();
        let expected = [
            Value::Str("a".into()),
            Value::Int(-2),
            Value::Float(1.5),
            Value::Bool(true),
            Value::None,
            Value::Bool(true),
            Value::Bytes(b"z".to_vec()),
            Value::Str("a".into()),
        ];
        assert_eq!(v.items().unwrap(), &expected);
    }

    #[test]
    fn unknown_callables_and_opcodes_are_refused() {
        let err = p(b"\x80\x02cos\nsystem\nX\x02\x00\x00\x00lsq\x00\x85R.").unwrap_err();
        assert!(err.to_string().contains("os.system") && err.to_string().contains("CIFAR"), "{err}");
        let err = p(b"\x80\x02NN.").unwrap_err();
        assert!(err.to_string().contains("STOP"), "{err}");
        let err = p(b"\x80\x02i").unwrap_err();
        assert!(err.to_string().contains("unsupported opcode 0x69"), "{err}");
    }

    #[test]
    fn deep_nesting_and_memo_bombs_are_refused() {
        let mut deep = b"\x80\x02".to_vec();
        deep.extend(std::iter::repeat_n(b'(', 100));
        deep.extend(std::iter::repeat_n(b't', 100));
        deep.push(b'.');
        assert!(p(&deep).unwrap_err().to_string().contains("nested"));
        // A tuple holding the same tuple twice, 40 levels deep, gathered into one list: 2^40
        // objects once the memo references are expanded.
        let mut bomb = b"\x80\x02(]q\x00".to_vec();
        for _ in 0..40 {
            bomb.extend_from_slice(b"(h\x00h\x00tq\x00");
        }
        bomb.extend_from_slice(b"l.");
        let err = p(&bomb).unwrap_err();
        assert!(err.to_string().contains("objects") || err.to_string().contains("nested") || err.to_string().contains("memo"), "{err}");
    }

    #[test]
    fn huge_lengths_are_refused_before_allocating() {
        let err = p(b"\x80\x04\x8e\xff\xff\xff\xff\xff\xff\xff\x7f").unwrap_err();
        assert!(err.to_string().contains("exceeds"), "{err}");
        let err = p(b"\x80\x02T\xff\xff\xff\xff").unwrap_err();
        assert!(err.to_string().contains("negative"), "{err}");
    }

    #[test]
    fn wrong_dtype_and_shape_are_refused() {
        let good = PY3_PROTO2;
        let wrong_dtype = replace(good, b"X\x02\x00\x00\x00u1", b"X\x02\x00\x00\x00i1");
        assert!(p(&wrong_dtype).unwrap_err().to_string().contains("dtype i1"));
        let wrong_shape = replace(good, b"K\x01K\x02K\x03\x86", b"K\x01K\x02K\x04\x86");
        assert!(p(&wrong_shape).unwrap_err().to_string().contains("shape [2, 4] holds 6 bytes"));
    }

    fn replace(hay: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
        let at = hay.windows(from.len()).position(|w| w == from).unwrap();
        [&hay[..at], to, &hay[at + from.len()..]].concat()
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = p(&bytes);
        }

        #[test]
        fn opcode_soup_never_panics(ops in proptest::collection::vec(proptest::sample::select(
            b"}])(qrhjJKM\x8aGNTUCBX\x8cct\x85\x86\x87Rbaesu.\x80\x94\x93\x88\x89\x00\x01\x02\xff".to_vec()), 0..256)) {
            let mut bytes = b"\x80\x02".to_vec();
            bytes.extend(ops);
            let _ = p(&bytes);
        }

        #[test]
        fn corrupted_valid_pickle_never_panics(at in 0..PY3_PROTO2.len(), byte in any::<u8>(), cut in 0..PY3_PROTO2.len()) {
            let mut bytes = PY3_PROTO2.to_vec();
            bytes[at] = byte;
            bytes.truncate(cut.max(at + 1));
            let _ = p(&bytes);
        }
    }
}
