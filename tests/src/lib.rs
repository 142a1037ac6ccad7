
pub mod mock_upstream;
