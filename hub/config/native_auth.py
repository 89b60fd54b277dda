"""The embedded login used when no OAuth provider is configured.

NativeAuthenticator lets people sign up and an admin approve them. Left alone, the admin
account is whoever signs up first under the admin's name; here the admin account is created
at hub start with the initial password that gpuhub-init wrote (from HUB_ADMIN_PASSWORD, or
generated), so that race never opens.
"""
import bcrypt
from nativeauthenticator import NativeAuthenticator
from nativeauthenticator.orm import UserInfo
from traitlets import Unicode


class SeededNativeAuthenticator(NativeAuthenticator):
    initial_admin_password_file = Unicode(
        "",
        config=True,
        help="""File with the initial password of the admin users, created on first start.

        Used only to create an admin account that does not exist yet; once created, the admin
        changes the password at /hub/change-password and this file no longer matters.
        """,
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seed_admin_accounts()

    def seed_admin_accounts(self) -> None:
        missing = [name for name in sorted(self.admin_users) if not self.user_exists(name)]
        if not missing:
            return
        if not self.initial_admin_password_file:
            self.log.warning("Admin accounts %s do not exist and no initial password file is set; "
                             "they can be claimed by signing up", missing)
            return
        with open(self.initial_admin_password_file) as f:
            password = f.read().strip()
        hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt())
        for name in missing:
            self.db.add(UserInfo(username=self.normalize_username(name), password=hashed, is_authorized=True))
            self.log.info("Created admin account %r with the initial password from %s",
                          name, self.initial_admin_password_file)
        self.db.commit()
