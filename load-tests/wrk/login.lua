-- POST the OAuth2 password form (username=$WRK_USERNAME, password=$WRK_PASSWORD) to the login URL.
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
package.path = here .. "?.lua;" .. package.path
local common = require("common")

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Accept"] = "application/json"
wrk.body = "username=" .. common.urlencode(common.getenv("WRK_USERNAME", "admin@example.com"))
  .. "&password=" .. common.urlencode(common.getenv("WRK_PASSWORD", "changethis"))

done = common.done
