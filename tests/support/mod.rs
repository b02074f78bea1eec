pub mod marathon;
