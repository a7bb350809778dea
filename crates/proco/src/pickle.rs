//! The one pickle reader of the crate, and it never runs code: the opcodes build plain
//! values, and a GLOBAL names a callable without importing it. Only the rebuild functions of
//! torch's tensors and plain containers are applied; any other GLOBAL, called (REDUCE) or
//! instantiated (NEWOBJ), becomes an [`Value::Opaque`] placeholder that records what the file
//! asked for and is never called. Its users interpret the tree they expect: the authors'
//! checkpoints ([`crate::import`]) and CIFAR's python batches, whose numpy arrays are opaque
//! `_reconstruct` calls here ([`crate::data::pickle`]). Written here because no Rust crate
//! reads such pickles with that guarantee (`serde-pickle` refuses GLOBAL outright, which
//! rejects every torch checkpoint and every numpy array).

use std::collections::HashMap;

/// The storage element types torch's checkpoints name (`torch.FloatStorage`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageKind {
    /// float32.
    Float,
    /// float64.
    Double,
    /// float16.
    Half,
    /// bfloat16.
    BFloat16,
    /// int64.
    Long,
    /// int32.
    Int,
    /// int16.
    Short,
    /// int8.
    Char,
    /// uint8.
    Byte,
    /// bool.
    Bool,
}

impl StorageKind {
    fn from_class(name: &str) -> Option<Self> {
        Some(match name {
            "FloatStorage" => Self::Float,
            "DoubleStorage" => Self::Double,
            "HalfStorage" => Self::Half,
            "BFloat16Storage" => Self::BFloat16,
            "LongStorage" => Self::Long,
            "IntStorage" => Self::Int,
            "ShortStorage" => Self::Short,
            "CharStorage" => Self::Char,
            "ByteStorage" | "UntypedStorage" => Self::Byte,
            "BoolStorage" => Self::Bool,
            _ => return None,
        })
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Self::Double | Self::Long => 8,
            Self::Float | Self::Int => 4,
            Self::Half | Self::BFloat16 | Self::Short => 2,
            Self::Char | Self::Byte | Self::Bool => 1,
        }
    }
}

/// A tensor as the pickle describes it: a view into a storage record of the archive.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorRef {
    /// Name of the storage's record (`data/<key>` in the archive).
    pub storage_key: String,
    /// Element type.
    pub kind: StorageKind,
    /// Elements in the storage.
    pub storage_numel: usize,
    /// Offset of the first element, in elements.
    pub offset: usize,
    /// Shape.
    pub size: Vec<usize>,
    /// Strides, in elements.
    pub stride: Vec<usize>,
}

/// A value the pickle built.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// None.
    None,
    /// True / False.
    Bool(bool),
    /// An integer that fits 64 bits.
    Int(i64),
    /// A larger integer (little-endian two's complement bytes).
    BigInt(Vec<u8>),
    /// A float.
    Float(f64),
    /// A string.
    Str(String),
    /// Bytes.
    Bytes(Vec<u8>),
    /// A list.
    List(Vec<Value>),
    /// A tuple.
    Tuple(Vec<Value>),
    /// A set or frozenset.
    Set(Vec<Value>),
    /// A dict or OrderedDict, in insertion order.
    Dict(Vec<(Value, Value)>),
    /// A torch tensor (or nn.Parameter).
    Tensor(TensorRef),
    /// A storage handed out by the archive (before a tensor is built on it).
    Storage {
        /// Record name.
        key: String,
        /// Element type.
        kind: StorageKind,
        /// Elements.
        numel: usize,
    },
    /// A GLOBAL that was named but not called (a class or a function).
    Global(String),
    /// What calling or instantiating a GLOBAL other than the allowed ones would have built:
    /// never imported, never called.
    Opaque {
        /// `module.name` of the GLOBAL.
        global: String,
        /// The arguments it would have been called with.
        args: Box<Value>,
        /// The state BUILD would have set on it.
        state: Option<Box<Value>>,
    },
}

impl Value {
    /// The value of `key` in a dict with string keys; of a repeated key, the last, as Python
    /// keeps it.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Dict(items) => items.iter().rev().find(|(k, _)| matches!(k, Value::Str(s) if s == key)).map(|(_, v)| v),
            _ => None,
        }
    }

    /// A short description of what the value is (for messages).
    pub fn describe(&self) -> String {
        match self {
            Value::None => "None".into(),
            Value::Bool(b) => format!("bool {b}"),
            Value::Int(i) => format!("int {i}"),
            Value::BigInt(_) => "a large int".into(),
            Value::Float(f) => format!("float {f}"),
            Value::Str(s) => format!("str {s:?}"),
            Value::Bytes(b) => format!("{} bytes", b.len()),
            Value::List(v) => format!("a list of {}", v.len()),
            Value::Tuple(v) => format!("a tuple of {}", v.len()),
            Value::Set(v) => format!("a set of {}", v.len()),
            Value::Dict(v) => format!("a dict of {} entries", v.len()),
            Value::Tensor(t) => format!("a tensor of shape {:?}", t.size),
            Value::Storage { .. } => "a bare storage".into(),
            Value::Global(g) => format!("the global {g} (not imported)"),
            Value::Opaque { global, .. } => format!("an object of {global} (never imported or called)"),
        }
    }

    /// Every `module.name` of the opaque objects and globals inside this value, once each.
    pub fn opaque_globals(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.collect_opaque(&mut out, 0);
        out.sort();
        out.dedup();
        out
    }

    fn collect_opaque(&self, out: &mut Vec<String>, depth: usize) {
        if depth > MAX_DEPTH {
            return;
        }
        match self {
            Value::Opaque { global, args, state } => {
                out.push(global.clone());
                args.collect_opaque(out, depth + 1);
                if let Some(s) = state {
                    s.collect_opaque(out, depth + 1);
                }
            }
            Value::Global(g) => out.push(g.clone()),
            Value::List(v) | Value::Tuple(v) | Value::Set(v) => v.iter().for_each(|x| x.collect_opaque(out, depth + 1)),
            Value::Dict(items) => items.iter().for_each(|(k, v)| {
                k.collect_opaque(out, depth + 1);
                v.collect_opaque(out, depth + 1);
            }),
            _ => {}
        }
    }
}

/// Why a pickle could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PickleError {
    /// The stream ended inside an opcode or before STOP.
    #[error("the pickle ends early (at byte {0}); the file is truncated")]
    Truncated(usize),
    /// A string or bytes opcode announces more bytes than the file has left.
    #[error("a length of {len} bytes at byte {at} exceeds the {left} bytes left; the file is truncated or damaged")]
    LengthExceeds {
        /// Position of the opcode.
        at: usize,
        /// The announced length.
        len: u64,
        /// Bytes after the length field.
        left: usize,
    },
    /// An opcode this reader does not know.
    #[error("unsupported pickle opcode 0x{op:02x} at byte {at}")]
    Unsupported {
        /// The opcode byte.
        op: u8,
        /// Its position.
        at: usize,
    },
    /// The opcodes do not make a well-formed value (an empty stack, a missing mark, ...).
    #[error("malformed pickle at byte {at}: {reason}")]
    Malformed {
        /// Position.
        at: usize,
        /// What was wrong.
        reason: String,
    },
}

/// Deepest nesting of containers accepted (a self-referencing structure is cut there).
const MAX_DEPTH: usize = 200;

/// Most objects the value tree may hold: memo references share a node in the machine, but
/// the tree copies it, so a pickle that references a list twice, 40 levels deep, would
/// otherwise expand to 2^40 objects.
const MAX_OBJECTS: usize = 1 << 22;

/// Most bytes of strings, bytes and shapes the value tree may hold (copies included).
const MAX_TREE_BYTES: usize = 1 << 31;

/// Longest `module.name` of a GLOBAL accepted.
const MAX_GLOBAL_NAME: usize = 1024;

/// What the value tree may still hold.
struct TreeBudget {
    objects: usize,
    bytes: usize,
}

/// A node of the value arena: containers refer to nodes by index, so that the memo shares
/// objects as pickle does (a dict filled after it was memoised is filled for every reference).
#[derive(Debug, Clone)]
enum Node {
    Leaf(Value),
    List(Vec<usize>),
    Tuple(Vec<usize>),
    Set(Vec<usize>),
    Dict(Vec<(usize, usize)>),
    Opaque { global: String, args: usize, state: Option<usize> },
}

/// Stack entry: a node, or a MARK.
#[derive(Debug, Clone, Copy)]
enum Slot {
    Node(usize),
    Mark,
}

struct Machine<'a> {
    data: &'a [u8],
    /// Bytes the machine may still copy (names, keys, shape lists): a multiple of the input,
    /// so that no sequence of opcodes makes the reading allocate without bound.
    copy_budget: usize,
    pos: usize,
    nodes: Vec<Node>,
    stack: Vec<Slot>,
    memo: HashMap<u32, usize>,
}

/// Reads a pickle (protocols 0-5 as torch writes them), applying only the allowed globals.
///
/// # Errors
/// [`PickleError`] for a truncated or malformed stream or an unknown opcode.
pub fn load(data: &[u8]) -> Result<Value, PickleError> {
    let copy_budget = data.len().saturating_mul(16).saturating_add(16 << 20);
    let mut m = Machine { data, copy_budget, pos: 0, nodes: Vec::new(), stack: Vec::new(), memo: HashMap::new() };
    let root = m.run()?;
    let mut budget = TreeBudget { objects: MAX_OBJECTS, bytes: MAX_TREE_BYTES };
    m.value(root, 0, &mut budget)
}

impl<'a> Machine<'a> {
    fn bad<T>(&self, reason: impl Into<String>) -> Result<T, PickleError> {
        Err(PickleError::Malformed { at: self.pos, reason: reason.into() })
    }

    /// Charges `n` copied bytes.
    fn charge(&mut self, n: usize) -> Result<(), PickleError> {
        match self.copy_budget.checked_sub(n) {
            Some(left) => {
                self.copy_budget = left;
                Ok(())
            }
            None => self.bad("the pickle copies more data than it holds many times over (a copy bomb?)"),
        }
    }

    /// A GLOBAL's name, bounded in length.
    fn global_name(&mut self, module: &str, name: &str) -> Result<String, PickleError> {
        let len = module.len() + name.len() + 1;
        if len > MAX_GLOBAL_NAME {
            return self.bad(format!("a global name of {len} bytes"));
        }
        self.charge(len)?;
        Ok(format!("{module}.{name}"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], PickleError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len()).ok_or(PickleError::Truncated(self.pos))?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    /// `n` bytes announced by the length field of the opcode at `at`.
    fn take_len(&mut self, at: usize, n: u64) -> Result<&'a [u8], PickleError> {
        let left = self.data.len() - self.pos;
        match usize::try_from(n) {
            Ok(n) if n <= left => self.take(n),
            _ => Err(PickleError::LengthExceeds { at, len: n, left }),
        }
    }

    fn u8(&mut self) -> Result<u8, PickleError> {
        Ok(self.take(1)?[0])
    }

    fn le_u32(&mut self) -> Result<u32, PickleError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn le_u64(&mut self) -> Result<u64, PickleError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    fn line(&mut self) -> Result<&'a str, PickleError> {
        let rest = &self.data[self.pos..];
        let n = rest.iter().position(|&b| b == b'\n').ok_or(PickleError::Truncated(self.data.len()))?;
        let s = std::str::from_utf8(&rest[..n]).map_err(|_| PickleError::Malformed { at: self.pos, reason: "a text argument is not UTF-8".into() })?;
        self.pos += n + 1;
        Ok(s)
    }

    fn push(&mut self, node: Node) {
        self.nodes.push(node);
        self.stack.push(Slot::Node(self.nodes.len() - 1));
    }

    fn leaf(&mut self, v: Value) {
        self.push(Node::Leaf(v));
    }

    fn pop(&mut self) -> Result<usize, PickleError> {
        match self.stack.pop() {
            Some(Slot::Node(i)) => Ok(i),
            Some(Slot::Mark) => self.bad("a MARK where a value was expected"),
            None => self.bad("the stack is empty"),
        }
    }

    fn top(&self) -> Result<usize, PickleError> {
        match self.stack.last() {
            Some(Slot::Node(i)) => Ok(*i),
            _ => self.bad("no value on the stack"),
        }
    }

    /// The values above the topmost MARK, which is removed.
    fn pop_mark(&mut self) -> Result<Vec<usize>, PickleError> {
        let mark = self.stack.iter().rposition(|s| matches!(s, Slot::Mark)).ok_or(PickleError::Malformed { at: self.pos, reason: "no MARK".into() })?;
        let items = self.stack.split_off(mark + 1);
        self.stack.pop();
        Ok(items.into_iter().map(|s| if let Slot::Node(i) = s { i } else { usize::MAX }).collect())
    }

    fn str_of(&self, i: usize) -> Option<&str> {
        match &self.nodes[i] {
            Node::Leaf(Value::Str(s)) => Some(s),
            _ => None,
        }
    }

    fn unicode(&mut self, at: usize, n: u64) -> Result<(), PickleError> {
        let b = self.take_len(at, n)?;
        let s = String::from_utf8(b.to_vec()).map_err(|_| PickleError::Malformed { at: self.pos, reason: "a string is not UTF-8".into() })?;
        self.leaf(Value::Str(s));
        Ok(())
    }

    fn memo_put(&mut self, key: u32) -> Result<(), PickleError> {
        let top = self.top()?;
        self.memo.insert(key, top);
        Ok(())
    }

    fn memo_get(&mut self, key: u32) -> Result<(), PickleError> {
        let i = *self.memo.get(&key).ok_or(PickleError::Malformed { at: self.pos, reason: format!("memo entry {key} is missing") })?;
        self.stack.push(Slot::Node(i));
        Ok(())
    }

    fn run(&mut self) -> Result<usize, PickleError> {
        loop {
            let at = self.pos;
            let op = self.u8()?;
            match op {
                0x80 => {
                    let v = self.u8()?;
                    if v > 5 {
                        return Err(PickleError::Malformed { at, reason: format!("unknown pickle protocol {v} (Python writes 0 to 5)") });
                    }
                }
                0x95 => {
                    self.le_u64()?; // FRAME
                }
                b'.' => {
                    let root = self.pop()?;
                    if !self.stack.is_empty() {
                        return self.bad(format!("STOP with {} more values or marks on the stack", self.stack.len()));
                    }
                    return Ok(root);
                }
                b'(' => self.stack.push(Slot::Mark),
                b'}' => self.push(Node::Dict(Vec::new())),
                b']' => self.push(Node::List(Vec::new())),
                b')' => self.push(Node::Tuple(Vec::new())),
                0x8f => self.push(Node::Set(Vec::new())),
                b'N' => self.leaf(Value::None),
                0x88 => self.leaf(Value::Bool(true)),
                0x89 => self.leaf(Value::Bool(false)),
                b'J' => {
                    let v = self.le_u32()? as i32;
                    self.leaf(Value::Int(i64::from(v)));
                }
                b'K' => {
                    let v = self.u8()?;
                    self.leaf(Value::Int(i64::from(v)));
                }
                b'M' => {
                    let b = self.take(2)?;
                    self.leaf(Value::Int(i64::from(u16::from_le_bytes([b[0], b[1]]))));
                }
                0x8a | 0x8b => {
                    let n = if op == 0x8a { u64::from(self.u8()?) } else { u64::from(self.le_u32()?) };
                    let b = self.take_len(at, n)?.to_vec();
                    let v = if b.is_empty() {
                        Value::Int(0)
                    } else if b.len() <= 8 {
                        // Sign-extend little-endian two's complement.
                        let fill = if b[b.len() - 1] & 0x80 != 0 { 0xff } else { 0 };
                        let mut a = [fill; 8];
                        a[..b.len()].copy_from_slice(&b);
                        Value::Int(i64::from_le_bytes(a))
                    } else {
                        Value::BigInt(b)
                    };
                    self.leaf(v);
                }
                b'G' => {
                    let b = self.take(8)?;
                    let mut a = [0u8; 8];
                    a.copy_from_slice(b);
                    self.leaf(Value::Float(f64::from_be_bytes(a)));
                }
                b'I' | b'L' => {
                    let text = self.line()?.trim_end_matches('L');
                    let v = match text {
                        "01" => Value::Bool(true),
                        "00" => Value::Bool(false),
                        t => Value::Int(t.parse().map_err(|_| PickleError::Malformed { at, reason: format!("bad integer {t:?}") })?),
                    };
                    self.leaf(v);
                }
                b'F' => {
                    let t = self.line()?;
                    let v = t.parse().map_err(|_| PickleError::Malformed { at, reason: format!("bad float {t:?}") })?;
                    self.leaf(Value::Float(v));
                }
                b'X' => {
                    let n = self.le_u32()?;
                    self.unicode(at, u64::from(n))?;
                }
                0x8c => {
                    let n = self.u8()?;
                    self.unicode(at, u64::from(n))?;
                }
                0x8d => {
                    let n = self.le_u64()?;
                    self.unicode(at, n)?;
                }
                b'T' | b'U' | b'B' | b'C' | 0x8e => {
                    let n = match op {
                        // BINSTRING's length is signed, as Python's pickle reads it.
                        b'T' => {
                            let n = self.le_u32()? as i32;
                            u64::try_from(n).map_err(|_| PickleError::Malformed { at, reason: format!("negative string length {n}") })?
                        }
                        b'B' => u64::from(self.le_u32()?),
                        b'U' | b'C' => u64::from(self.u8()?),
                        _ => self.le_u64()?,
                    };
                    let b = self.take_len(at, n)?.to_vec();
                    // Python 2 strings (T, U) were text to torch (and hold a numpy array's
                    // bytes in a Python 2 CIFAR batch); bytes (B, C) stay bytes.
                    let v = match op {
                        b'T' | b'U' => String::from_utf8(b).map_or_else(|e| Value::Bytes(e.into_bytes()), Value::Str),
                        _ => Value::Bytes(b),
                    };
                    self.leaf(v);
                }
                b't' => {
                    let items = self.pop_mark()?;
                    self.push(Node::Tuple(items));
                }
                0x85..=0x87 => {
                    let n = usize::from(op - 0x84);
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop()?);
                    }
                    items.reverse();
                    self.push(Node::Tuple(items));
                }
                b'l' => {
                    let items = self.pop_mark()?;
                    self.push(Node::List(items));
                }
                b'd' => {
                    let items = self.pop_mark()?;
                    if items.len() % 2 != 0 {
                        return self.bad("DICT with an odd number of items");
                    }
                    self.push(Node::Dict(items.chunks_exact(2).map(|p| (p[0], p[1])).collect()));
                }
                b'a' => {
                    let v = self.pop()?;
                    let list = self.top()?;
                    self.extend(list, vec![v])?;
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    let list = self.top()?;
                    self.extend(list, items)?;
                }
                0x90 => {
                    let items = self.pop_mark()?;
                    let set = self.top()?;
                    self.extend(set, items)?;
                }
                0x91 => {
                    let items = self.pop_mark()?;
                    self.push(Node::Set(items));
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    let d = self.top()?;
                    self.set_items(d, vec![k, v])?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    let d = self.top()?;
                    self.set_items(d, items)?;
                }
                b'q' => {
                    let k = u32::from(self.u8()?);
                    self.memo_put(k)?;
                }
                b'r' => {
                    let k = self.le_u32()?;
                    self.memo_put(k)?;
                }
                0x94 => {
                    let k = self.memo.len() as u32;
                    self.memo_put(k)?;
                }
                b'p' => {
                    let k = self.line()?.parse().map_err(|_| PickleError::Malformed { at, reason: "bad PUT index".into() })?;
                    self.memo_put(k)?;
                }
                b'h' => {
                    let k = u32::from(self.u8()?);
                    self.memo_get(k)?;
                }
                b'j' => {
                    let k = self.le_u32()?;
                    self.memo_get(k)?;
                }
                b'g' => {
                    let k = self.line()?.parse().map_err(|_| PickleError::Malformed { at, reason: "bad GET index".into() })?;
                    self.memo_get(k)?;
                }
                b'0' => {
                    self.stack.pop().ok_or(PickleError::Malformed { at, reason: "POP on an empty stack".into() })?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let t = self.top()?;
                    self.stack.push(Slot::Node(t));
                }
                b'c' => {
                    let module = self.line()?.to_string();
                    let name = self.line()?.to_string();
                    let g = self.global_name(&module, &name)?;
                    self.leaf(Value::Global(g));
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let (Some(m), Some(n)) = (self.str_of(module).map(str::to_string), self.str_of(name).map(str::to_string)) else { return self.bad("STACK_GLOBAL without two strings") };
                    let g = self.global_name(&m, &n)?;
                    self.leaf(Value::Global(g));
                }
                b'R' => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let node = self.apply(callable, args)?;
                    self.push(node);
                }
                0x81 => {
                    let args = self.pop()?;
                    let cls = self.pop()?;
                    let node = self.apply(cls, args)?;
                    self.push(node);
                }
                0x92 => {
                    let _kwargs = self.pop()?;
                    let args = self.pop()?;
                    let cls = self.pop()?;
                    let node = self.apply(cls, args)?;
                    self.push(node);
                }
                b'b' => {
                    let state = self.pop()?;
                    let obj = self.top()?;
                    // State of an opaque object is recorded; the state of containers and
                    // tensors (an OrderedDict's _metadata, a tensor's hooks) is dropped.
                    if let Node::Opaque { state: s, .. } = &mut self.nodes[obj] {
                        *s = Some(state);
                    }
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let node = self.persistent(pid)?;
                    self.push(node);
                }
                _ => return Err(PickleError::Unsupported { op, at }),
            }
        }
    }

    fn extend(&mut self, target: usize, items: Vec<usize>) -> Result<(), PickleError> {
        match &mut self.nodes[target] {
            Node::List(v) | Node::Set(v) => {
                v.extend(items);
                Ok(())
            }
            // Appending to an opaque object's state is recorded as its arguments' business.
            Node::Opaque { .. } => Ok(()),
            _ => self.bad("APPEND to something that is not a list"),
        }
    }

    fn set_items(&mut self, target: usize, items: Vec<usize>) -> Result<(), PickleError> {
        if items.len() % 2 != 0 {
            return self.bad("SETITEMS with an odd number of items");
        }
        match &mut self.nodes[target] {
            Node::Dict(d) => {
                d.extend(items.chunks_exact(2).map(|p| (p[0], p[1])));
                Ok(())
            }
            Node::Opaque { .. } => Ok(()),
            _ => self.bad("SETITEM on something that is not a dict"),
        }
    }

    /// REDUCE / NEWOBJ: the allowed rebuild functions and containers are applied; anything
    /// else becomes an opaque placeholder.
    fn apply(&mut self, callable: usize, args: usize) -> Result<Node, PickleError> {
        // Calling an opaque object's result is recorded under the same global.
        let global = match &self.nodes[callable] {
            Node::Leaf(Value::Global(g)) | Node::Opaque { global: g, .. } => g.clone(),
            _ => return self.bad("REDUCE of something that is not a global"),
        };
        self.charge(global.len())?;
        let arg_list: Vec<usize> = match &self.nodes[args] {
            Node::Tuple(v) => v.clone(),
            _ => Vec::new(),
        };
        self.charge(arg_list.len().saturating_mul(8))?;
        let node = match global.as_str() {
            "collections.OrderedDict" if arg_list.is_empty() => Node::Dict(Vec::new()),
            "builtins.set" | "__builtin__.set" | "builtins.frozenset" | "__builtin__.frozenset" => match arg_list.first().map(|&i| &self.nodes[i]) {
                Some(Node::List(v)) | Some(Node::Tuple(v)) | Some(Node::Set(v)) => {
                    let items = v.clone();
                    self.charge(items.len().saturating_mul(8))?;
                    Node::Set(items)
                }
                None => Node::Set(Vec::new()),
                _ => Node::Opaque { global, args, state: None },
            },
            "torch._utils._rebuild_tensor_v2" | "torch._utils._rebuild_tensor" => match self.rebuild_tensor(&arg_list) {
                Some(t) => {
                    self.charge(t.storage_key.len() + 16 * t.size.len())?;
                    Node::Leaf(Value::Tensor(t))
                }
                None => return self.bad(format!("{global} with arguments that are not (storage, offset, size, stride, ...)")),
            },
            // (data, requires_grad, hooks): the parameter is its data.
            "torch._utils._rebuild_parameter" | "torch._utils._rebuild_parameter_with_state" => match arg_list.first() {
                Some(&i) if matches!(self.nodes[i], Node::Leaf(Value::Tensor(_))) => {
                    let node = self.nodes[i].clone();
                    if let Node::Leaf(Value::Tensor(t)) = &node {
                        self.charge(t.storage_key.len() + 16 * t.size.len())?;
                    }
                    node
                }
                _ => return self.bad("_rebuild_parameter without a tensor"),
            },
            _ => Node::Opaque { global, args, state: None },
        };
        Ok(node)
    }

    fn int_at(&self, i: usize) -> Option<usize> {
        match &self.nodes[i] {
            Node::Leaf(Value::Int(v)) => usize::try_from(*v).ok(),
            _ => None,
        }
    }

    fn ints_at(&self, i: usize) -> Option<Vec<usize>> {
        match &self.nodes[i] {
            Node::Tuple(v) | Node::List(v) => v.iter().map(|&j| self.int_at(j)).collect(),
            _ => None,
        }
    }

    fn rebuild_tensor(&self, args: &[usize]) -> Option<TensorRef> {
        let (storage, offset, size, stride) = (*args.first()?, *args.get(1)?, *args.get(2)?, *args.get(3)?);
        let Node::Leaf(Value::Storage { key, kind, numel }) = &self.nodes[storage] else { return None };
        let (size, stride) = (self.ints_at(size)?, self.ints_at(stride)?);
        if size.len() != stride.len() {
            return None;
        }
        Some(TensorRef { storage_key: key.clone(), kind: *kind, storage_numel: *numel, offset: self.int_at(offset)?, size, stride })
    }

    /// BINPERSID: torch's ('storage', storage class, key, location, numel).
    fn persistent(&mut self, pid: usize) -> Result<Node, PickleError> {
        let parts = match &self.nodes[pid] {
            Node::Tuple(v) => v.clone(),
            _ => return self.bad("a persistent id that is not a tuple"),
        };
        let tag = parts.first().and_then(|&i| self.str_of(i));
        if tag != Some("storage") || parts.len() < 5 {
            return self.bad("a persistent id other than torch's ('storage', type, key, location, numel)");
        }
        let class = match &self.nodes[parts[1]] {
            Node::Leaf(Value::Global(g)) => g.clone(),
            _ => return self.bad("a storage without a storage type"),
        };
        let kind = class.strip_prefix("torch.").and_then(StorageKind::from_class).ok_or(PickleError::Malformed { at: self.pos, reason: format!("unknown storage type {class}") })?;
        let key = self.str_of(parts[2]).ok_or(PickleError::Malformed { at: self.pos, reason: "a storage key that is not a string".into() })?.to_string();
        if key.len() > MAX_GLOBAL_NAME {
            return self.bad(format!("a storage key of {} bytes", key.len()));
        }
        self.charge(key.len())?;
        let numel = self.int_at(parts[4]).ok_or(PickleError::Malformed { at: self.pos, reason: "a storage size that is not an integer".into() })?;
        Ok(Node::Leaf(Value::Storage { key, kind, numel }))
    }

    /// The value tree of node `i`.
    fn value(&self, i: usize, depth: usize, budget: &mut TreeBudget) -> Result<Value, PickleError> {
        if depth > MAX_DEPTH {
            return self.bad(format!("containers nested deeper than {MAX_DEPTH} (a self-referencing structure?)"));
        }
        let bytes = match &self.nodes[i] {
            Node::Leaf(Value::Str(s)) => s.len(),
            Node::Leaf(Value::Bytes(b) | Value::BigInt(b)) => b.len(),
            Node::Leaf(Value::Tensor(t)) => t.storage_key.len() + 16 * t.size.len(),
            Node::Leaf(Value::Storage { key, .. }) => key.len(),
            Node::Leaf(Value::Global(g)) | Node::Opaque { global: g, .. } => g.len(),
            _ => 0,
        };
        match (budget.objects.checked_sub(1), budget.bytes.checked_sub(bytes)) {
            (Some(o), Some(b)) => (budget.objects, budget.bytes) = (o, b),
            _ => return self.bad(format!("more than {MAX_OBJECTS} objects or {MAX_TREE_BYTES} bytes once expanded (repeated memo references?)")),
        }
        let all = |v: &[usize], budget: &mut TreeBudget| v.iter().map(|&j| self.value(j, depth + 1, budget)).collect::<Result<Vec<_>, _>>();
        Ok(match &self.nodes[i] {
            Node::Leaf(v) => v.clone(),
            Node::List(v) => Value::List(all(v, budget)?),
            Node::Tuple(v) => Value::Tuple(all(v, budget)?),
            Node::Set(v) => Value::Set(all(v, budget)?),
            Node::Dict(d) => {
                let mut items = Vec::with_capacity(d.len());
                for &(k, v) in d {
                    items.push((self.value(k, depth + 1, budget)?, self.value(v, depth + 1, budget)?));
                }
                Value::Dict(items)
            }
            Node::Opaque { global, args, state } => Value::Opaque {
                global: global.clone(),
                args: Box::new(self.value(*args, depth + 1, budget)?),
                state: match state {
                    Some(s) => Some(Box::new(self.value(*s, depth + 1, budget)?)),
                    None => None,
                },
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_global_for_os_system_with_reduce_becomes_an_opaque_placeholder() {
        // pickle.dumps of an object whose __reduce__ is (os.system, ('touch /tmp/pwned',)), protocol 2.
        let mut p = b"\x80\x02cposix\nsystem\nq\x00X\x10\x00\x00\x00touch /tmp/pwnedq\x01\x85q\x02Rq\x03.".to_vec();
        let v = load(&p).unwrap();
        match &v {
            Value::Opaque { global, args, state: None } => {
                assert_eq!(global, "posix.system");
                assert_eq!(**args, Value::Tuple(vec![Value::Str("touch /tmp/pwned".into())]));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(v.opaque_globals(), ["posix.system"]);
        // Truncated: an error, not a panic.
        p.truncate(p.len() - 3);
        assert!(matches!(load(&p), Err(PickleError::Truncated(_)) | Err(PickleError::Malformed { .. })));
    }

    #[test]
    fn dict_filled_after_memo_is_shared() {
        // d = {}; memo; d['a'] = 1; [d, d] via BINGET.
        let p = b"\x80\x02]q\x00(}q\x01X\x01\x00\x00\x00aK\x01sh\x01e.";
        let v = load(p).unwrap();
        let d = Value::Dict(vec![(Value::Str("a".into()), Value::Int(1))]);
        assert_eq!(v, Value::List(vec![d.clone(), d]));
    }

    #[test]
    fn memo_bombs_and_leftovers_are_refused() {
        // A list holding the same list twice, 40 levels deep: 2^40 objects as a tree.
        let mut bomb = b"\x80\x02(]q\x00".to_vec();
        for _ in 0..40 {
            bomb.extend_from_slice(b"(h\x00h\x00tq\x00");
        }
        // Everything into one list, so that STOP finds a single value.
        bomb.extend_from_slice(b"l.");
        let err = load(&bomb).unwrap_err().to_string();
        assert!(err.contains("objects") || err.contains("nested"), "{err}");
        assert!(load(b"\x80\x02NN.").unwrap_err().to_string().contains("STOP"));
    }

    #[test]
    fn copies_are_bounded_by_the_input() {
        // Calling an opaque result over and over records one flat placeholder, not a name
        // that grows with every call.
        let mut calls = b"\x80\x02cos\nsystem\n".to_vec();
        for _ in 0..100_000 {
            calls.extend_from_slice(b")R");
        }
        calls.push(b'.');
        match load(&calls).unwrap() {
            Value::Opaque { global, .. } => assert_eq!(global, "os.system"),
            other => panic!("{other:?}"),
        }
        // A global name far longer than any module path is refused.
        let long = "m".repeat(5000);
        let p = [b"\x80\x02c".as_slice(), long.as_bytes(), b"\nf\n."].concat();
        assert!(load(&p).unwrap_err().to_string().contains("global name"));
    }

    #[test]
    fn long1_sign_extends() {
        assert_eq!(load(b"\x8a\x02\xff\xfe.").unwrap(), Value::Int(-257));
        assert_eq!(load(b"\x8a\x00.").unwrap(), Value::Int(0));
        assert_eq!(load(b"\x8a\x01\x7f.").unwrap(), Value::Int(127));
    }

    proptest! {
        // Any bytes: an error or a value, never a panic.
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = load(&bytes);
        }
        // Random opcode soup built from real opcodes.
        #[test]
        fn opcode_soup_never_panics(ops in proptest::collection::vec(prop::sample::select(b"().}]N\x88\x89K\x01tlds\x85\x86\x87aeuq\x00h\x00R\x81b0212\x8f\x90\x91".to_vec()), 0..120)) {
            let _ = load(&ops);
        }
    }
}
