//! Networks: the CIFAR ResNet-32 backbone, the heads of ProCo's two branches, and the
//! two-branch network that ties them together.

pub mod heads;
pub mod net;
pub mod resnet_cifar;

pub use heads::{Classifier, ProjectionHead};
pub use net::TwoBranchNet;
pub use resnet_cifar::ResNetCifar;
