//! batch/v1: the Job and CronJob loops. What each decides is a pure function (`job::plan`,
//! `cronjob::plan`, with schedules read by `cron`); `jobs` and `cronjobs` feed those from the
//! cache and carry the plans out through the API server.

pub mod cron;
pub mod cronjob;
mod cronjobs;
pub mod job;
mod jobs;

pub use cronjobs::CronJobs;
pub use jobs::Jobs;
