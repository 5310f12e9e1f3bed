//! The `rookery.v1.Licensing` gRPC service over the [`Manager`].

use rookery_common::proto::licensing_server::{Licensing, LicensingServer};
use rookery_common::proto::{
    CheckFeatureRequest, CheckFeatureResponse, Entitlements, GetEntitlementsRequest,
    GetLicenseRequest, LicenseStatus, ReportUsageRequest, ReportUsageResponse, SetKeyRequest,
};
use tonic::{Request, Response, Status};

use crate::manager::{Manager, SetKeyError};

/// Longest feature name accepted (catalogue names are far shorter).
const MAX_NAME: usize = 128;
/// Most counters one daemon may report at once.
const MAX_COUNTERS: usize = 256;

/// The service implementation.
pub struct Service(Manager);

/// The tonic server for `manager`.
pub fn server(manager: Manager) -> LicensingServer<Service> {
    LicensingServer::new(Service(manager))
}

fn check_name(what: &str, name: &str) -> Result<(), Status> {
    if name.is_empty()
        || name.len() > MAX_NAME
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
    {
        return Err(Status::invalid_argument(format!(
            "{what} \"{}\" is invalid (expected 1 to {MAX_NAME} characters of a-z, 0-9, '-', '.', '_')",
            name.chars().take(MAX_NAME).collect::<String>()
        )));
    }
    Ok(())
}

#[tonic::async_trait]
impl Licensing for Service {
    async fn get_license(
        &self,
        _: Request<GetLicenseRequest>,
    ) -> Result<Response<LicenseStatus>, Status> {
        Ok(Response::new(self.0.status()))
    }

    async fn check_feature(
        &self,
        request: Request<CheckFeatureRequest>,
    ) -> Result<Response<CheckFeatureResponse>, Status> {
        let name = request.into_inner().name;
        check_name("feature name", &name)?;
        let (enabled, reason) = self.0.check_feature(&name);
        Ok(Response::new(CheckFeatureResponse { enabled, reason }))
    }

    async fn get_entitlements(
        &self,
        _: Request<GetEntitlementsRequest>,
    ) -> Result<Response<Entitlements>, Status> {
        Ok(Response::new(self.0.entitlements()))
    }

    async fn set_key(
        &self,
        request: Request<SetKeyRequest>,
    ) -> Result<Response<LicenseStatus>, Status> {
        match self.0.set_key(&request.into_inner().key).await {
            Ok(status) => Ok(Response::new(status)),
            Err(SetKeyError::Format(err)) => Err(Status::invalid_argument(format!(
                "invalid licence key: {err}"
            ))),
            Err(err @ SetKeyError::Save(_)) => {
                Err(Status::internal(rookery_common::error_chain(&err)))
            }
        }
    }

    async fn report_usage(
        &self,
        request: Request<ReportUsageRequest>,
    ) -> Result<Response<ReportUsageResponse>, Status> {
        let r = request.into_inner();
        check_name("daemon", &r.daemon)?;
        if r.counters.len() > MAX_COUNTERS {
            return Err(Status::invalid_argument(format!(
                "{} counters reported, at most {MAX_COUNTERS} allowed",
                r.counters.len()
            )));
        }
        for name in r.counters.keys() {
            check_name("counter name", name)?;
        }
        self.0
            .report_usage(&r.daemon, r.counters.into_iter().collect());
        Ok(Response::new(ReportUsageResponse {}))
    }
}
