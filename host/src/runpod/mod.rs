//! RunPod serverless: the job router every transport shares, the local RunPod API
//! (`/run`, `/runsync`, `/status`, ... also under `/v2/{endpoint_id}`), and the worker loop
//! that takes jobs from the platform when `RUNPOD_WEBHOOK_GET_JOB` is set.

pub mod jobs;
pub mod local_api;
pub mod router;
pub mod worker;
