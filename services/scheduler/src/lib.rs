//! The agentmesh scheduler (SPEC §4).
//!
//! Schedules live in [`store`]. The [`engine`] sleeps until the next one is
//! due, claims due runs atomically (so several replicas never fire one run
//! twice), decides each from what [`directory`] knows of the workspace
//! (native scheduler, load), and sends it through the gateway with
//! [`dispatch`]. [`api`] serves `agentmesh.scheduler.v1.SchedulerService`;
//! [`timetable`] reads cron expressions in their timezones.

pub mod api;
pub mod directory;
pub mod dispatch;
pub mod engine;
pub mod error;
pub mod metrics;
pub mod server;
pub mod settings;
pub mod store;
pub mod timetable;
