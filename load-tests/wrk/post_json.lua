-- POST $WRK_BODY (JSON) with "Authorization: Bearer $WRK_TOKEN" to the URL given to wrk.
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
package.path = here .. "?.lua;" .. package.path
local common = require("common")

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json"
wrk.body = common.getenv("WRK_BODY", '{"title":"bench item","description":"created by wrk"}')
common.bearer()

done = common.done
