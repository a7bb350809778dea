//! Networks: the CIFAR ResNet-32 and ImageNet ResNet-50 / ResNeXt-50 backbones, the heads of ProCo's two branches, and the
//! two-branch network that ties them together.

pub mod autocast;
pub mod heads;
pub mod memory_format;
pub mod net;
pub mod resnet;
pub mod resnet_cifar;

pub use heads::{Classifier, ProjectionHead};
pub use net::{Arch, ClassifierKind, ModelConfig, Precision, TwoBranchNet};
pub use resnet::ResNetImageNet;
pub use resnet_cifar::ResNetCifar;
