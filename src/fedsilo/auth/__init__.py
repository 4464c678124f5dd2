"""The seed's auth SDK under fedsilo's name: users, scoped tokens, ``token_info``, the audit log.

::

    from fedsilo.auth import connect_to_auth_client, Scope

    auth = connect_to_auth_client(token=os.environ["FEDSILO_TOKEN"])
    auth.create_user("demo-user")
    tok = auth.create_token(user_id="demo-user",
                            scopes=[Scope.create_session, Scope.read_user_session])

The implementation is :mod:`fedsilo.sdk.auth`; the scopes are :mod:`fedsilo.scopes`.
"""

from fedsilo.auth.scopes import Scope
from fedsilo.sdk.auth import AuthClient, connect_to_auth_client

__all__ = ["AuthClient", "Scope", "connect_to_auth_client"]
