// License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl-3.0).
// The same tour as mail_graph_api_tour.js for 14.0, 15.0 and 16.0, whose tour manager is the legacy
// "web_tour.tour" module. A plain script (outside static/src and static/tests, which 18.0+ load as ES modules):
// from 17.0 on (odoo.loader exists) it does nothing.
(function () {
    "use strict";
    if (!window.odoo || odoo.loader || !odoo.define) {
        return;
    }
    odoo.define("mail_graph_api.tour_legacy", function (require) {
        var tour = require("web_tour.tour");

        // 14.0/15.0 render a char field as the <input name=...> itself, 16.0 as a div holding the input.
        function input(name) {
            return ".o_form_view input[name=" + name + "], .o_form_view div[name=" + name + "] input";
        }
        function fill(name, value) {
            return {
                trigger: input(name),
                run: function () {
                    var element = document.querySelector(input(name));
                    element.value = value;
                    element.dispatchEvent(new Event("input", {bubbles: true}));
                    element.dispatchEvent(new Event("change", {bubbles: true}));
                },
            };
        }
        // A step that only waits for its trigger (a step without run would click or type).
        function waitFor(trigger) {
            return {trigger: trigger, run: function () {}};
        }

        tour.register("mail_graph_api_tour", {test: true}, [
            fill("name", "Microsoft Graph tour"),
            {trigger: "div[name=use_graph_api] input", run: "click"},
            // 14.0/15.0 tab links carry no name
            {trigger: ".o_notebook_headers a:contains(Microsoft Graph)", run: "click"},
            fill("graph_client_id", "2f9b8c7d-6e5a-4b3c-8d2e-1f0a9b8c7d6e"),
            fill("graph_client_secret", "fake-secret-3Qx~v8Lr"),
            fill("graph_tenant_id", "7a3c6f0e-2b1d-4e5f-9a8b-0c1d2e3f4a5b"),
            fill("graph_sender_email", "admin@contoso.onmicrosoft.com"),
            waitFor(input("graph_authority_url")),
            // An object button saves the new record first, then Odoo follows the act_url to Microsoft.
            {trigger: "button[name=action_graph_authenticate]", run: "click"},
            // The fake Microsoft consents at once and sends the browser back to Odoo's callback.
            waitFor(".o_mail_graph_api_result:contains(Connected to Microsoft)"),
            {trigger: "a.o_mail_graph_api_back", run: "click"},
            waitFor(".o_mail_graph_api_state:contains(Connected)"),
            {trigger: ".o_form_view button[name=test_smtp_connection]:visible", run: "click"},
            waitFor(".o_notification:contains(Connection to Microsoft Graph successful)"),
        ]);
    });
})();
