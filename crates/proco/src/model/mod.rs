//! Networks: the CIFAR ResNet-32 backbone and the heads of ProCo's two branches.

pub mod heads;
pub mod resnet_cifar;

pub use heads::{Classifier, ProjectionHead};
pub use resnet_cifar::ResNetCifar;
