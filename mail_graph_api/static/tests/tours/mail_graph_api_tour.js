/** @odoo-module **/
// License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl-3.0).
// One tour for 17.0, 18.0 and 19.0: only steps every series understands (click, a run function, a trigger to
// wait for). The test sets the fake Microsoft's endpoints as defaults of new mail servers.
import { registry } from "@web/core/registry";

// 17.0 edits with `text`, 18.0+ with `edit`: set the input as a user would, by DOM events, on all three.
function fill(selector, value) {
    return function () {
        const input = document.querySelector(selector);
        input.value = value;
        input.dispatchEvent(new Event("input", { bubbles: true }));
        input.dispatchEvent(new Event("change", { bubbles: true }));
    };
}

// A step that only waits for its trigger (17.0 would click a step without `run`).
function waitFor(trigger) {
    return { trigger, run: () => {} };
}

registry.category("web_tour.tours").add("mail_graph_api_tour", {
    steps: () => [
        {
            trigger: ".o_form_view div[name=name] input",
            run: fill(".o_form_view div[name=name] input", "Microsoft Graph tour"),
        },
        { trigger: "div[name=use_graph_api] input", run: "click" },
        { trigger: ".o_notebook_headers a[name=graph]", run: "click" },
        {
            trigger: "div[name=graph_client_id] input",
            run: fill("div[name=graph_client_id] input", "2f9b8c7d-6e5a-4b3c-8d2e-1f0a9b8c7d6e"),
        },
        {
            trigger: "div[name=graph_client_secret] input",
            run: fill("div[name=graph_client_secret] input", "fake-secret-3Qx~v8Lr"),
        },
        {
            trigger: "div[name=graph_tenant_id] input",
            run: fill("div[name=graph_tenant_id] input", "7a3c6f0e-2b1d-4e5f-9a8b-0c1d2e3f4a5b"),
        },
        {
            trigger: "div[name=graph_sender_email] input",
            run: fill("div[name=graph_sender_email] input", "admin@contoso.onmicrosoft.com"),
        },
        waitFor("div[name=graph_authority_url] input"),
        // An object button saves the new record first, then Odoo follows the act_url to Microsoft.
        {
            trigger: "button[name=action_graph_authenticate]",
            run: "click",
            expectUnloadPage: true,
        },
        // The fake Microsoft consents at once and sends the browser back to Odoo's callback.
        waitFor(".o_mail_graph_api_result:contains(Connected to Microsoft)"),
        { trigger: "a.o_mail_graph_api_back", run: "click", expectUnloadPage: true },
        waitFor(".o_mail_graph_api_state:contains(Connected)"),
        { trigger: "button[name=test_smtp_connection]", run: "click" },
        waitFor(".o_notification:contains(Connection to Microsoft Graph successful)"),
    ],
});
