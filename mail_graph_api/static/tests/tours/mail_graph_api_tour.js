/** @odoo-module **/
// License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl-3.0).
import { registry } from "@web/core/registry";
import { rpc } from "@web/core/network/rpc";

// The fake Microsoft listens on a random port: the test stores its URLs in system parameters.
function editFromParam(key) {
    return async function (actions) {
        const value = await rpc("/web/dataset/call_kw/ir.config_parameter/get_param", {
            model: "ir.config_parameter",
            method: "get_param",
            args: [key],
            kwargs: {},
        });
        await actions.edit(value);
    };
}

registry.category("web_tour.tours").add("mail_graph_api_tour", {
    url: "/odoo/ir.mail_server/new",
    steps: () => [
        { trigger: ".o_form_view div[name=name] input", run: "edit Microsoft Graph tour" },
        { trigger: "div[name=use_graph_api] input", run: "click" },
        { trigger: ".o_notebook_headers a[name=graph]", run: "click" },
        {
            trigger: "div[name=graph_client_id] input",
            run: "edit 2f9b8c7d-6e5a-4b3c-8d2e-1f0a9b8c7d6e",
        },
        { trigger: "div[name=graph_client_secret] input", run: "edit fake-secret-3Qx~v8Lr" },
        {
            trigger: "div[name=graph_tenant_id] input",
            run: "edit 7a3c6f0e-2b1d-4e5f-9a8b-0c1d2e3f4a5b",
        },
        { trigger: "div[name=graph_sender_email] input", run: "edit admin@contoso.onmicrosoft.com" },
        { trigger: "div[name=graph_cloud] select", run: 'select "custom"' },
        {
            trigger: "div[name=graph_authority_url] input",
            run: editFromParam("mail_graph_api.tour_authority_url"),
        },
        {
            trigger: "div[name=graph_api_url] input",
            run: editFromParam("mail_graph_api.tour_api_url"),
        },
        { trigger: ".o_form_button_save", run: "click" },
        { trigger: ".o_form_view .o_form_saved" },
        {
            trigger: "button[name=action_graph_authenticate]",
            run: "click",
            expectUnloadPage: true,
        },
        // The fake Microsoft consents at once and sends the browser back to Odoo's callback.
        { trigger: ".o_mail_graph_api_result:contains(Connected to Microsoft)" },
        { trigger: "a.o_mail_graph_api_back", run: "click", expectUnloadPage: true },
        { trigger: ".o_mail_graph_api_state:contains(Connected)" },
        { trigger: "button[name=test_smtp_connection]", run: "click" },
        { trigger: ".o_notification:contains(Connection to Microsoft Graph successful)" },
    ],
});
