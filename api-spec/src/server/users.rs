//! Users: `/api/v1/users`.

use super::common::{self, CommandAccepted, Done, Tagged, invalid};
use super::contract::documents::UserPage;
use super::contract::text::Text;
use super::problem::ApiResult;
use super::queries as q;
use super::security::BearerAuth;
use chrono::{DateTime, Utc};
use edict_application::Edict;
use edict_application::users::NewUser;
use edict_domain::UserId;
use edict_domain::user::{Email, GlobalRole, PersonName, User};
use poem::Request;
use poem::web::Data;
use poem_openapi::param::Header;
use poem_openapi::param::Path;
use poem_openapi::param::Query;
use poem_openapi::payload::Json;
use poem_openapi::{Enum, Object, OpenApi, Tags};

use std::sync::Arc;

#[derive(Tags)]
enum UserTags {
    /// People who use Edict, and their global roles.
    Users,
}

/// A global role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum GlobalRoleDto {
    /// Administers everything.
    OrgAdmin,
    /// Reads everything, changes nothing.
    Auditor,
    /// A developer.
    Member,
}

impl From<GlobalRoleDto> for GlobalRole {
    fn from(role: GlobalRoleDto) -> Self {
        match role {
            GlobalRoleDto::OrgAdmin => GlobalRole::OrgAdmin,
            GlobalRoleDto::Auditor => GlobalRole::Auditor,
            GlobalRoleDto::Member => GlobalRole::Member,
        }
    }
}

impl From<GlobalRole> for GlobalRoleDto {
    fn from(role: GlobalRole) -> Self {
        match role {
            GlobalRole::OrgAdmin => GlobalRoleDto::OrgAdmin,
            GlobalRole::Auditor => GlobalRoleDto::Auditor,
            GlobalRole::Member => GlobalRoleDto::Member,
        }
    }
}

/// A user to create.
#[derive(Debug, Clone, Object)]
pub struct NewUserDto {
    /// Unique email; it is their sign-in name.
    pub email: Text,
    /// Their name.
    pub name: Text,
    /// Their first password: 12 to 1024 characters.
    #[oai(write_only)]
    pub password: Text,
    /// Their global roles.
    #[oai(default)]
    #[oai(nullable)]
    pub roles: Vec<GlobalRoleDto>,
}

/// A role to grant.
#[derive(Debug, Clone, Object)]
pub struct RoleDto {
    /// The role.
    pub role: GlobalRoleDto,
}

/// A password change.
#[derive(Debug, Clone, Object)]
pub struct PasswordDto {
    /// The current password (required to change your own).
    #[oai(write_only)]
    #[oai(nullable)]
    pub current_password: Option<Text>,
    /// The new password: 12 to 1024 characters.
    #[oai(write_only)]
    pub new_password: Text,
}

/// A user.
#[derive(Debug, Clone, Object)]
pub struct UserDto {
    /// Their id.
    pub id: String,
    /// The number of events so far; send as `If-Match`.
    pub version: u64,
    /// Their email.
    pub email: String,
    /// Their name.
    pub name: String,
    /// Their global roles.
    pub roles: Vec<GlobalRoleDto>,
    /// Whether they may sign in.
    pub active: bool,
    /// When they were created.
    pub created_at: DateTime<Utc>,
}

impl UserDto {
    fn from_user(user: &User) -> Option<Self> {
        use edict_domain::Versioned;
        Some(UserDto {
            id: user.id()?.to_string(),
            version: user.version(),
            email: user.email()?.as_str().to_owned(),
            name: user.name()?.as_str().to_owned(),
            roles: user.roles().iter().map(|r| (*r).into()).collect(),
            active: user.active(),
            created_at: user.created_at()?,
        })
    }
}

fn user_id(raw: &str) -> Result<UserId, super::problem::ErrorResponse> {
    common::id::<UserId>(raw, "user")
}

fn found(user: &User, if_none_match: Option<&str>) -> ApiResult<Tagged<UserDto>> {
    let user = UserDto::from_user(user)
        .ok_or_else(|| edict_application::error::AppError::NotFound("user".into()))?;
    let version = user.version;
    Ok(common::tagged(user, version, if_none_match))
}

/// Users.
pub struct UsersApi;

#[OpenApi(tag = "UserTags::Users")]
impl UsersApi {
    /// Creates a user with a password. org_admin.
    #[oai(path = "/api/v1/users", method = "post")]
    async fn create(
        &self,
        edict: Data<&Arc<Edict>>,
        auth: BearerAuth,
        request: &Request,
        body: Json<NewUserDto>,
    ) -> ApiResult<Json<CommandAccepted>> {
        let new = NewUser {
            email: Email::parse(&body.email).map_err(invalid)?,
            name: PersonName::parse(&body.name).map_err(invalid)?,
            password: body.password.to_string(),
            roles: body.roles.iter().map(|r| (*r).into()).collect(),
        };
        let ctx = common::context(request)?;
        Ok(Json(edict.create_user(&auth.0, new, &ctx).await?.into()))
    }

    /// The signed-in user.
    #[oai(path = "/api/v1/users/me", method = "get")]
    async fn me(
        &self,
        edict: Data<&Arc<Edict>>,
        auth: BearerAuth,
        /// A version from an earlier answer's `ETag`: 304 without a body while it is still current.
        #[oai(name = "If-None-Match")]
        if_none_match: Header<Option<String>>,
    ) -> ApiResult<Tagged<UserDto>> {
        let user = edict.user(&auth.0, auth.0.user()).await?;
        found(&user, if_none_match.as_deref())
    }

    /// A user. org_admin, auditor, or the user themself.
    #[oai(path = "/api/v1/users/:id", method = "get")]
    async fn get(
        &self,
        edict: Data<&Arc<Edict>>,
        auth: BearerAuth,
        id: Path<String>,
        /// A version from an earlier answer's `ETag`: 304 without a body while it is still current.
        #[oai(name = "If-None-Match")]
        if_none_match: Header<Option<String>>,
    ) -> ApiResult<Tagged<UserDto>> {
        let user = edict.user(&auth.0, user_id(&id)?).await?;
        found(&user, if_none_match.as_deref())
    }

    /// Grants a global role. org_admin.
    #[oai(path = "/api/v1/users/:id/roles", method = "post")]
    async fn grant_role(
        &self,
        edict: Data<&Arc<Edict>>,
        auth: BearerAuth,
        request: &Request,
        id: Path<String>,
        body: Json<RoleDto>,
    ) -> ApiResult<Json<CommandAccepted>> {
        let id = user_id(&id)?;
        let ctx = common::context(request)?;
        Ok(Json(
            edict
                .grant_role(&auth.0, id, body.role.into(), &ctx)
                .await?
                .into(),
        ))
    }

    /// Revokes a global role. org_admin (not their own org_admin role).
    #[oai(path = "/api/v1/users/:id/roles/:role", method = "delete")]
    async fn revoke_role(
        &self,
        edict: Data<&Arc<Edict>>,
        auth: BearerAuth,
        request: &Request,
        id: Path<String>,
        role: Path<GlobalRoleDto>,
    ) -> ApiResult<Json<CommandAccepted>> {
        let id = user_id(&id)?;
        let ctx = common::context(request)?;
        Ok(Json(
            edict
                .revoke_role(&auth.0, id, role.0.into(), &ctx)
                .await?
                .into(),
        ))
    }

    /// Deactivates a user: their sessions close at once. org_admin.
    #[oai(path = "/api/v1/users/:id/deactivate", method = "post")]
    async fn deactivate(
        &self,
        edict: Data<&Arc<Edict>>,
        auth: BearerAuth,
        request: &Request,
        id: Path<String>,
    ) -> ApiResult<Json<CommandAccepted>> {
        let id = user_id(&id)?;
        let ctx = common::context(request)?;
        Ok(Json(edict.deactivate_user(&auth.0, id, &ctx).await?.into()))
    }

    /// Reactivates a user. org_admin.
    #[oai(path = "/api/v1/users/:id/reactivate", method = "post")]
    async fn reactivate(
        &self,
        edict: Data<&Arc<Edict>>,
        auth: BearerAuth,
        request: &Request,
        id: Path<String>,
    ) -> ApiResult<Json<CommandAccepted>> {
        let id = user_id(&id)?;
        let ctx = common::context(request)?;
        Ok(Json(edict.reactivate_user(&auth.0, id, &ctx).await?.into()))
    }

    /// Changes a password: your own with the current one, or anyone's as org_admin.
    #[oai(path = "/api/v1/users/:id/password", method = "put")]
    async fn password(
        &self,
        edict: Data<&Arc<Edict>>,
        auth: BearerAuth,
        request: &Request,
        id: Path<String>,
        body: Json<PasswordDto>,
    ) -> ApiResult<Json<Done>> {
        let id = user_id(&id)?;
        let ctx = common::context(request)?;
        edict
            .change_password(
                &auth.0,
                id,
                body.current_password.as_deref(),
                &body.new_password,
                &ctx,
            )
            .await?;
        Ok(Json(Done { done: true }))
    }

    /// Users with their roles and teams; filter `status` (`active`, `deactivated`). org_admin or auditor.
    #[oai(path = "/api/v1/users", method = "get")]
    async fn list(
        &self,
        edict: Data<&Arc<Edict>>,
        auth: BearerAuth,
        status: Query<Option<String>>,
        after: Query<Option<String>>,
        limit: Query<Option<u32>>,
        min_position: Query<Option<i64>>,
    ) -> ApiResult<Json<UserPage>> {
        let page = q::page(after.0, limit.0, min_position.0);
        Ok(Json(UserPage::of(
            edict.list_users(&auth.0, status.0, &page).await?,
        )?))
    }
}
