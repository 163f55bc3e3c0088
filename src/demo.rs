//! placeholder
use crate::error::Error;
pub async fn run(_d: crate::cli::DemoArgs) -> Result<u8, Error> {
    Err(Error::Runtime("demo: in progress".into()))
}
