//! placeholder
use crate::options::ConnectionOptions;
pub fn run(_args: &[Vec<u8>], _options: &ConnectionOptions) -> i32 {
    1
}
