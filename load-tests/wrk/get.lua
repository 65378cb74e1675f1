-- GET the URL given to wrk; sends "Authorization: Bearer $WRK_TOKEN" when WRK_TOKEN is set.
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
package.path = here .. "?.lua;" .. package.path
local common = require("common")

wrk.method = "GET"
wrk.headers["Accept"] = "application/json"
common.bearer()

done = common.done
