//! The sink: the Records API side of the pipeline. The dispatcher turns records into batches and
//! launches them (`dispatch`, `fifo`); each delivery submits one batch and follows its job
//! (`deliver`, `jobs`), within the in-flight limit (`concurrency`) and the quota (`budget`),
//! through the API client (`api`).

pub mod api;
pub mod budget;
pub mod concurrency;
pub mod deliver;
pub mod dispatch;
pub mod fifo;
pub mod jobs;
