//! A minimal, safe reader of Python pickles, enough for the CIFAR "python version" files.
//!
//! The official CIFAR batches are Python 2 `cPickle` dumps (protocol 2) of a dict holding a
//! numpy `uint8` array and lists; re-dumped copies made with Python 3 use protocol 2 to 4. This
//! reader understands the opcodes those dumps use and nothing else. It never imports or calls
//! anything: `GLOBAL` / `STACK_GLOBAL` only record a name, and `REDUCE` is interpreted
//! structurally for the three callables such dumps contain:
//!
//! - `numpy.core.multiarray._reconstruct` (numpy 2 writes `numpy._core.multiarray`) with
//!   `numpy.ndarray`: an array whose shape, dtype and bytes the following `BUILD` supplies;
//!   only C-ordered `uint8` arrays are accepted;
//! - `numpy.dtype`: the dtype's name (e.g. `u1`);
//! - `_codecs.encode(text, "latin1")` and `__builtin__.bytes()`: how Python 3 writes `bytes`
//!   under protocol 2.
//!
//! Any other callable or opcode is an error saying the file is not a CIFAR pickle.
//!
//! Hostile input cannot make it panic, recurse deeply or allocate without bound: every length is
//! checked against the bytes that remain (so strings total at most the file size), containers
//! nest at most [`MAX_DEPTH`] deep, and at most [`MAX_OBJECTS`] objects are created or copied
//! (a memo reference copies its object).

use std::collections::HashMap;
use std::path::Path;
use std::rc::Rc;

use crate::error::{ProcoError, Result};

/// Deepest container nesting accepted. A CIFAR dict nests 4 deep (dict, array state tuple,
/// dtype, dtype state tuple).
pub const MAX_DEPTH: usize = 32;

/// Most objects one pickle may create or copy. The CIFAR-100 training file, the largest,
/// holds about 150,000 (two label lists and the file names of 50,000 images).
pub const MAX_OBJECTS: usize = 1 << 22;

/// A Python object read from a pickle.
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
    /// A byte string: a Python 2 `str` (BINSTRING) or a Python 3 `bytes`.
    Bytes(Rc<[u8]>),
    /// A text string (Python 2 `unicode`, Python 3 `str`).
    Str(Rc<str>),
    /// A tuple.
    Tuple(Vec<Value>),
    /// A list.
    List(Vec<Value>),
    /// A dict, as (key, value) pairs in insertion order; a repeated key keeps every pair, and
    /// [`Value::get`] returns the last, as Python would.
    Dict(Vec<(Value, Value)>),
    /// A global name (`module.name`), recorded, never imported.
    Global(Rc<GlobalName>),
    /// A numpy dtype, by its name (`u1` for `uint8`).
    Dtype(Rc<str>),
    /// A numpy array made by `_reconstruct` whose state (`BUILD`) has not been set yet.
    UnbuiltArray,
    /// A numpy `uint8` array in C order.
    Array(NdArray),
}

/// The name of a Python global (a class or function), as a pickle records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobalName {
    /// Module path, e.g. `numpy.core.multiarray`.
    pub module: String,
    /// Name inside the module, e.g. `_reconstruct`.
    pub name: String,
}

/// A C-ordered numpy array of `uint8`.
#[derive(Debug, Clone, PartialEq)]
pub struct NdArray {
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// The elements in C (row-major) order; `data.len()` is the product of `shape`.
    pub data: Rc<[u8]>,
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

    /// Direct children of a container (pairs of a dict flattened).
    fn children(&self) -> Box<dyn Iterator<Item = &Value> + '_> {
        match self {
            Value::Tuple(v) | Value::List(v) => Box::new(v.iter()),
            Value::Dict(pairs) => Box::new(pairs.iter().flat_map(|(k, v)| [k, v])),
            _ => Box::new(std::iter::empty()),
        }
    }

    /// Container nesting: 0 for a scalar. Recursion is bounded by [`MAX_DEPTH`], which every
    /// value the parser builds respects.
    fn depth(&self) -> usize {
        match self {
            Value::Tuple(_) | Value::List(_) | Value::Dict(_) => 1 + self.children().map(Value::depth).max().unwrap_or(0),
            _ => 0,
        }
    }

    /// Number of objects a copy of this value creates (itself and everything inside).
    fn count(&self) -> usize {
        1 + self.children().map(Value::count).sum::<usize>()
    }
}

/// Parses one pickle from `bytes`, read from `path` (used in error messages only).
///
/// Fails with [`ProcoError::Data`] naming `path` and the byte offset on a truncated or
/// malformed pickle, on any opcode or callable outside the subset described in the module
/// documentation, and when the limits [`MAX_DEPTH`] / [`MAX_OBJECTS`] are exceeded.
pub fn parse(bytes: &[u8], path: &Path) -> Result<Value> {
    Parser { input: bytes, pos: 0, op_at: 0, stack: Vec::new(), marks: Vec::new(), memo: HashMap::new(), objects: 0, path }.run()
}

fn fail(path: &Path, at: usize, reason: impl std::fmt::Display) -> ProcoError {
    ProcoError::Data { path: path.to_path_buf(), reason: format!("pickle byte {at}: {reason}") }
}

struct Parser<'a> {
    input: &'a [u8],
    pos: usize,
    /// Offset of the opcode being executed, for error messages.
    op_at: usize,
    stack: Vec<Value>,
    /// Stack lengths at each open MARK.
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
    /// Objects created or copied so far (bounded by MAX_OBJECTS).
    objects: usize,
    path: &'a Path,
}

impl<'a> Parser<'a> {
    fn err(&self, reason: impl std::fmt::Display) -> ProcoError {
        fail(self.path, self.op_at, reason)
    }

    fn run(mut self) -> Result<Value> {
        loop {
            self.op_at = self.pos;
            let op = self.byte()?;
            if op == b'.' {
                return self.stop();
            }
            self.step(op)?;
        }
    }

    /// STOP: the pickle must have left exactly one object and no open MARK.
    fn stop(mut self) -> Result<Value> {
        if self.stack.len() != 1 || !self.marks.is_empty() {
            return Err(self.err(format!("STOP with {} objects and {} open marks on the stack", self.stack.len(), self.marks.len())));
        }
        self.stack.pop().ok_or_else(|| self.err("STOP on an empty stack"))
    }

    fn step(&mut self, op: u8) -> Result<()> {
        match op {
            0x80 => self.proto(),
            0x95 => self.frame(),
            b'}' => self.push(Value::Dict(Vec::new())),
            b']' => self.push(Value::List(Vec::new())),
            b')' => self.push(Value::Tuple(Vec::new())),
            b'(' => {
                self.marks.push(self.stack.len());
                Ok(())
            }
            b'q' => {
                let i = self.byte()?;
                self.memo_put(u32::from(i))
            }
            b'r' => {
                let i = self.u32_le()?;
                self.memo_put(i)
            }
            0x94 => self.memo_put(u32::try_from(self.memo.len()).map_err(|_| self.err("memo is full"))?),
            b'h' => {
                let i = self.byte()?;
                self.memo_get(u32::from(i))
            }
            b'j' => {
                let i = self.u32_le()?;
                self.memo_get(i)
            }
            b'J' => {
                let v = i32::from_le_bytes(self.array()?);
                self.push(Value::Int(i64::from(v)))
            }
            b'K' => {
                let v = self.byte()?;
                self.push(Value::Int(i64::from(v)))
            }
            b'M' => {
                let v = u16::from_le_bytes(self.array()?);
                self.push(Value::Int(i64::from(v)))
            }
            0x8a => self.long1(),
            b'I' => self.int_line(),
            b'G' => {
                let v = f64::from_be_bytes(self.array()?);
                self.push(Value::Float(v))
            }
            0x88 => self.push(Value::Bool(true)),
            0x89 => self.push(Value::Bool(false)),
            b'N' => self.push(Value::None),
            b'T' => {
                let n = i32::from_le_bytes(self.array()?);
                let n = usize::try_from(n).map_err(|_| self.err(format!("negative string length {n}")))?;
                self.bytes_of_len(n)
            }
            b'U' | b'C' => {
                let n = self.byte()?;
                self.bytes_of_len(usize::from(n))
            }
            b'B' => {
                let n = self.u32_le()?;
                self.bytes_of_len(self.len_from(u64::from(n))?)
            }
            0x8e => {
                let n = u64::from_le_bytes(self.array()?);
                self.bytes_of_len(self.len_from(n)?)
            }
            b'X' => {
                let n = self.u32_le()?;
                self.text_of_len(self.len_from(u64::from(n))?)
            }
            0x8c => {
                let n = self.byte()?;
                self.text_of_len(usize::from(n))
            }
            0x8d => {
                let n = u64::from_le_bytes(self.array()?);
                self.text_of_len(self.len_from(n)?)
            }
            b'c' => self.global_lines(),
            0x93 => self.stack_global(),
            b't' => {
                let items = self.pop_mark()?;
                self.container(Value::Tuple(items))
            }
            0x85..=0x87 => self.tuple_n(usize::from(op - 0x84)),
            b'R' => self.reduce(),
            b'b' => self.build(),
            b'a' => {
                let v = self.pop()?;
                self.extend_list(vec![v])
            }
            b'e' => {
                let items = self.pop_mark()?;
                self.extend_list(items)
            }
            b's' => {
                let v = self.pop()?;
                let k = self.pop()?;
                self.extend_dict(vec![k, v])
            }
            b'u' => {
                let items = self.pop_mark()?;
                self.extend_dict(items)
            }
            _ => Err(self.err(format!("unsupported opcode 0x{op:02x}: not a CIFAR pickle"))),
        }
    }

    // ----- input -----

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let left = self.input.len() - self.pos;
        if n > left {
            return Err(self.err(format!("truncated: {n} bytes needed, {left} left")));
        }
        let s = &self.input[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn byte(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u32_le(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    /// A length field as usize, refused when it exceeds the bytes left (so every allocation
    /// it sizes is bounded by the file).
    fn len_from(&self, n: u64) -> Result<usize> {
        let left = self.input.len() - self.pos;
        usize::try_from(n).ok().filter(|&n| n <= left).ok_or_else(|| self.err(format!("truncated: length {n} exceeds the {left} bytes left")))
    }

    /// A newline-terminated ASCII line (GLOBAL, INT), without the newline.
    fn line(&mut self) -> Result<&'a str> {
        let rest = &self.input[self.pos..];
        let n = rest.iter().position(|&b| b == b'\n').ok_or_else(|| self.err("truncated: unterminated text line"))?;
        let line = std::str::from_utf8(&rest[..n]).map_err(|_| self.err("non-UTF-8 text line"))?;
        self.pos += n + 1;
        Ok(line)
    }

    // ----- stack -----

    fn charge(&mut self, objects: usize) -> Result<()> {
        self.objects = self.objects.saturating_add(objects);
        if self.objects > MAX_OBJECTS {
            return Err(self.err(format!("more than {MAX_OBJECTS} objects: not a CIFAR pickle")));
        }
        Ok(())
    }

    fn push(&mut self, v: Value) -> Result<()> {
        self.charge(1)?;
        self.stack.push(v);
        Ok(())
    }

    /// Pushes a freshly built container after checking its nesting.
    fn container(&mut self, v: Value) -> Result<()> {
        if v.depth() > MAX_DEPTH {
            return Err(self.err(format!("containers nested more than {MAX_DEPTH} deep: not a CIFAR pickle")));
        }
        self.push(v)
    }

    fn pop(&mut self) -> Result<Value> {
        if self.marks.last().is_some_and(|&m| m >= self.stack.len()) {
            return Err(self.err("stack underflow (reached a MARK)"));
        }
        self.stack.pop().ok_or_else(|| self.err("stack underflow"))
    }

    fn top_mut(&mut self) -> Result<&mut Value> {
        if self.marks.last().is_some_and(|&m| m >= self.stack.len()) {
            return Err(self.err("stack underflow (reached a MARK)"));
        }
        let (path, at) = (self.path, self.op_at);
        self.stack.last_mut().ok_or_else(|| fail(path, at, "stack underflow"))
    }

    fn pop_mark(&mut self) -> Result<Vec<Value>> {
        let m = self.marks.pop().ok_or_else(|| self.err("no MARK to pop to"))?;
        Ok(self.stack.split_off(m))
    }

    /// Memoizes a copy of the top of the stack (counted against MAX_OBJECTS before copying).
    fn memo_put(&mut self, i: u32) -> Result<()> {
        let n = self.top_mut()?.count();
        self.charge(n)?;
        let v = self.top_mut()?.clone();
        self.memo.insert(i, v);
        Ok(())
    }

    /// Pushes a copy of a memoized object (counted against MAX_OBJECTS before copying).
    fn memo_get(&mut self, i: u32) -> Result<()> {
        let n = self.memo.get(&i).map(Value::count).ok_or_else(|| self.err(format!("memo entry {i} does not exist")))?;
        self.charge(n)?;
        let v = self.memo.get(&i).cloned().ok_or_else(|| self.err(format!("memo entry {i} does not exist")))?;
        self.stack.push(v);
        Ok(())
    }

    // ----- opcodes -----

    fn proto(&mut self) -> Result<()> {
        let v = self.byte()?;
        if v > 5 {
            return Err(self.err(format!("unknown pickle protocol {v}")));
        }
        Ok(())
    }

    /// FRAME: framing is a hint for buffered readers; only its length is checked.
    fn frame(&mut self) -> Result<()> {
        let n = u64::from_le_bytes(self.array()?);
        self.len_from(n).map(|_| ())
    }

    fn long1(&mut self) -> Result<()> {
        let n = usize::from(self.byte()?);
        if n > 8 {
            return Err(self.err(format!("{n}-byte integer does not fit in 64 bits")));
        }
        let b = self.take(n)?;
        let fill = if b.last().is_some_and(|&x| x & 0x80 != 0) { 0xff } else { 0 };
        let mut le = [fill; 8];
        le[..n].copy_from_slice(b);
        self.push(Value::Int(i64::from_le_bytes(le)))
    }

    /// INT (protocol 0/1 text integer; `00` / `01` are False / True).
    fn int_line(&mut self) -> Result<()> {
        let line = self.line()?;
        let v = match line {
            "00" => Value::Bool(false),
            "01" => Value::Bool(true),
            _ => Value::Int(line.parse().map_err(|_| self.err(format!("bad INT {line:?}")))?),
        };
        self.push(v)
    }

    fn bytes_of_len(&mut self, n: usize) -> Result<()> {
        let b = self.take(n)?;
        self.push(Value::Bytes(Rc::from(b)))
    }

    fn text_of_len(&mut self, n: usize) -> Result<()> {
        let b = self.take(n)?;
        let s = std::str::from_utf8(b).map_err(|_| self.err("text string is not UTF-8"))?;
        self.push(Value::Str(Rc::from(s)))
    }

    fn global_lines(&mut self) -> Result<()> {
        let module = self.line()?.to_owned();
        let name = self.line()?.to_owned();
        self.push(Value::Global(Rc::new(GlobalName { module, name })))
    }

    fn stack_global(&mut self) -> Result<()> {
        let name = self.pop()?;
        let module = self.pop()?;
        match (module, name) {
            (Value::Str(module), Value::Str(name)) => {
                self.push(Value::Global(Rc::new(GlobalName { module: module.to_string(), name: name.to_string() })))
            }
            _ => Err(self.err("STACK_GLOBAL of non-strings")),
        }
    }

    fn tuple_n(&mut self, n: usize) -> Result<()> {
        let at = self.stack.len().checked_sub(n).ok_or_else(|| self.err("stack underflow"))?;
        if self.marks.last().is_some_and(|&m| m > at) {
            return Err(self.err("stack underflow (reached a MARK)"));
        }
        let items = self.stack.split_off(at);
        self.container(Value::Tuple(items))
    }

    fn extend_list(&mut self, items: Vec<Value>) -> Result<()> {
        let deepest = items.iter().map(Value::depth).max().unwrap_or(0);
        if deepest >= MAX_DEPTH {
            return Err(self.err(format!("containers nested more than {MAX_DEPTH} deep: not a CIFAR pickle")));
        }
        match self.top_mut()? {
            Value::List(list) => {
                list.extend(items);
                Ok(())
            }
            _ => Err(self.err("APPEND to something that is not a list")),
        }
    }

    fn extend_dict(&mut self, items: Vec<Value>) -> Result<()> {
        if items.len() % 2 != 0 {
            return Err(self.err("SETITEMS with an odd number of objects"));
        }
        let deepest = items.iter().map(Value::depth).max().unwrap_or(0);
        if deepest >= MAX_DEPTH {
            return Err(self.err(format!("containers nested more than {MAX_DEPTH} deep: not a CIFAR pickle")));
        }
        let Value::Dict(pairs) = self.top_mut()? else {
            return Err(self.err("SETITEM on something that is not a dict"));
        };
        let mut it = items.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            pairs.push((k, v));
        }
        Ok(())
    }

    fn reduce(&mut self) -> Result<()> {
        let args = self.pop()?;
        let callable = self.pop()?;
        let (Value::Global(g), Value::Tuple(args)) = (&callable, args) else {
            return Err(self.err("REDUCE of something other than a global with a tuple of arguments: not a CIFAR pickle"));
        };
        let v = match (g.module.as_str(), g.name.as_str()) {
            ("numpy.core.multiarray" | "numpy._core.multiarray", "_reconstruct") => self.reconstruct(&args)?,
            ("numpy", "dtype") => match args.first().and_then(Value::text_bytes).map(std::str::from_utf8) {
                Some(Ok(name)) => Value::Dtype(Rc::from(name)),
                _ => return Err(self.err("numpy.dtype without a name")),
            },
            ("_codecs", "encode") => self.codecs_encode(&args)?,
            ("__builtin__" | "builtins", "bytes") if args.is_empty() => Value::Bytes(Rc::from(&[][..])),
            (m, n) => return Err(self.err(format!("call of {m}.{n}, which a CIFAR pickle does not contain"))),
        };
        self.push(v)
    }

    /// `_reconstruct(numpy.ndarray, (0,), b'b')`: an empty array that BUILD will fill.
    fn reconstruct(&self, args: &[Value]) -> Result<Value> {
        match args.first() {
            Some(Value::Global(g)) if g.module == "numpy" && g.name == "ndarray" => Ok(Value::UnbuiltArray),
            _ => Err(self.err("_reconstruct of something other than numpy.ndarray: not a CIFAR pickle")),
        }
    }

    /// `_codecs.encode(text, "latin1")`: Python 3's protocol-2 spelling of `bytes`.
    fn codecs_encode(&mut self, args: &[Value]) -> Result<Value> {
        let (Some(Value::Str(text)), Some(Value::Str(enc))) = (args.first(), args.get(1)) else {
            return Err(self.err("_codecs.encode without (text, encoding) arguments"));
        };
        // Each call allocates a new byte string: charge its length (in 64-byte units) so that
        // repeated calls on one memoized text cannot allocate without bound.
        self.charge(text.len() / 64 + 1)?;
        if !matches!(&**enc, "latin1" | "latin-1" | "iso-8859-1") {
            return Err(self.err(format!("_codecs.encode to {enc:?}: only latin1 is used for bytes")));
        }
        let bytes: Option<Vec<u8>> = text.chars().map(|c| u8::try_from(u32::from(c)).ok()).collect();
        bytes.map(|b| Value::Bytes(Rc::from(b))).ok_or_else(|| self.err("_codecs.encode of text outside latin1"))
    }

    fn build(&mut self) -> Result<()> {
        let state = self.pop()?;
        let obj = self.pop()?;
        let v = match obj {
            // The state of a dtype (byte order, field names, ...) does not matter for uint8.
            Value::Dtype(_) => obj,
            Value::UnbuiltArray => self.array_state(state)?,
            _ => return Err(self.err("BUILD of something other than a numpy array or dtype: not a CIFAR pickle")),
        };
        self.push(v)
    }

    /// ndarray.__setstate__: `(version, shape, dtype, is_fortran, data)` or the same without
    /// the version.
    fn array_state(&self, state: Value) -> Result<Value> {
        let Value::Tuple(fields) = state else { return Err(self.err("numpy array state is not a tuple")) };
        let fields = match fields.len() {
            5 => &fields[1..],
            4 => &fields[..],
            n => return Err(self.err(format!("numpy array state has {n} fields, expected 4 or 5"))),
        };
        let shape = self.shape(&fields[0])?;
        match &fields[1] {
            Value::Dtype(d) if matches!(&**d, "u1" | "|u1") => {}
            Value::Dtype(d) => return Err(self.err(format!("numpy array of dtype {d}; CIFAR pixels are uint8 (u1)"))),
            _ => return Err(self.err("numpy array state without a dtype")),
        }
        let fortran = match fields[2] {
            Value::Bool(b) => b,
            Value::Int(i) => i != 0,
            _ => return Err(self.err("numpy array state: is_fortran is not a bool")),
        };
        if fortran && shape.len() > 1 {
            return Err(self.err("Fortran-ordered numpy array; CIFAR data is C-ordered"));
        }
        let Value::Bytes(data) = &fields[3] else { return Err(self.err("numpy array data is not a byte string")) };
        let expected = shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
        if expected != Some(data.len()) {
            return Err(self.err(format!("numpy array of shape {shape:?} holds {} bytes", data.len())));
        }
        Ok(Value::Array(NdArray { shape, data: Rc::clone(data) }))
    }

    fn shape(&self, v: &Value) -> Result<Vec<usize>> {
        let dims = v.items().ok_or_else(|| self.err("numpy array shape is not a tuple"))?;
        dims.iter()
            .map(|d| match d {
                Value::Int(i) => usize::try_from(*i).map_err(|_| self.err(format!("negative array dimension {i}"))),
                _ => Err(self.err("numpy array dimension is not an integer")),
            })
            .collect()
    }
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
            Value::Str(Rc::from("a")),
            Value::Int(-2),
            Value::Float(1.5),
            Value::Bool(true),
            Value::None,
            Value::Bool(true),
            Value::Bytes(Rc::from(&b"z"[..])),
            Value::Str(Rc::from("a")),
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
        // A list of 2^k copies via repeated memo references.
        let mut bomb = b"\x80\x02]q\x00".to_vec();
        for _ in 0..40 {
            bomb.extend_from_slice(b"(h\x00h\x00tq\x00");
        }
        bomb.push(b'.');
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
