fn main() { let t = proco::tch::Tensor::from_slice(&[1.0f64, 2.0]); t.print(); }
