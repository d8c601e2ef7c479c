import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;

import org.javarosa.core.model.Constants;
import org.javarosa.core.model.FormDef;
import org.javarosa.core.model.SelectChoice;
import org.javarosa.core.model.data.AnswerDataFactory;
import org.javarosa.core.model.data.IAnswerData;
import org.javarosa.core.model.data.SelectMultiData;
import org.javarosa.core.model.data.SelectOneData;
import org.javarosa.core.model.data.UncastData;
import org.javarosa.core.model.data.helper.Selection;
import org.javarosa.core.model.instance.InstanceInitializationFactory;
import org.javarosa.core.reference.ReferenceManager;
import org.javarosa.form.api.FormEntryController;
import org.javarosa.form.api.FormEntryModel;
import org.javarosa.form.api.FormEntryPrompt;
import org.javarosa.model.xform.XFormSerializingVisitor;
import org.javarosa.model.xform.XFormsModule;
import org.javarosa.xform.parse.XFormParser;

import java.io.File;
import java.io.IOException;
import java.io.StringReader;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;

/**
 * Fills a form as a person does in ODK Collect, with JavaRosa (the engine inside Collect): for the
 * programme tests in tests/oracle/test_programme_forms.py.
 *
 * <p>Usage: java -cp ODK_Validate.jar:. FormFiller request.json response.json
 *
 * <p>Request: {"media_dir": "...", "runs": [{"xform": "...", "answers": {"/data/x": "value"}}]}:
 * the form's attachments (wards.csv, establishments.csv) are read from media_dir as Collect reads
 * its form media (jr://file-csv/NAME). Each run steps through the form from the start, answering
 * the questions it names when it reaches them (which fires their setvalue actions), then
 * finalizes the instance as Collect does before it saves.
 *
 * <p>Response: {"results": [{"instance": "<data ...>", "choices": {"/data/x": ["a", "b"]},
 * "errors": [...], "error": "..."}]}: `choices` are the values each select offered when reached.
 */
public class FormFiller {

    public static void main(String[] args) throws Exception {
        new XFormsModule().registerModule();
        ObjectMapper mapper = new ObjectMapper();
        JsonNode request = mapper.readTree(new File(args[0]));
        ReferenceManager.instance()
            .addReferenceFactory(new FileRoot(new File(request.get("media_dir").asText()), "file-csv", "file"));
        ObjectNode out = mapper.createObjectNode();
        ArrayNode results = out.putArray("results");
        for (JsonNode run : request.get("runs")) {
            results.add(fill(mapper, run));
        }
        mapper.writeValue(new File(args[1]), out);
    }

    static ObjectNode fill(ObjectMapper mapper, JsonNode run) {
        ObjectNode result = mapper.createObjectNode();
        ObjectNode choices = result.putObject("choices");
        ArrayNode errors = result.putArray("errors");
        try {
            FormDef form = new XFormParser(new StringReader(run.get("xform").asText())).parse();
            form.initialize(true, new InstanceInitializationFactory());
            FormEntryController entry = new FormEntryController(new FormEntryModel(form));
            JsonNode answers = run.get("answers");
            int event;
            while ((event = entry.stepToNextEvent()) != FormEntryController.EVENT_END_OF_FORM) {
                if (event != FormEntryController.EVENT_QUESTION) {
                    continue; // groups; repeats are not added
                }
                FormEntryPrompt prompt = entry.getModel().getQuestionPrompt();
                String path = prompt.getIndex().getReference().toString(false);
                if (isSelect(prompt)) {
                    ArrayNode offered = choices.putArray(path);
                    for (SelectChoice choice : prompt.getSelectChoices()) {
                        offered.add(choice.getValue());
                    }
                }
                if (!answers.has(path)) {
                    continue;
                }
                String value = answers.get(path).asText();
                IAnswerData data = answer(prompt, value);
                if (data == null) {
                    errors.add(path + ": " + value + " is not one of the choices offered");
                    continue;
                }
                int status = entry.answerQuestion(prompt.getIndex(), data, true);
                if (status != FormEntryController.ANSWER_OK) {
                    errors.add(path + ": answer refused (" + status + ")");
                }
            }
            form.postProcessInstance();
            byte[] xml = new XFormSerializingVisitor().serializeInstance(form.getInstance());
            result.put("instance", new String(xml, StandardCharsets.UTF_8));
        } catch (Throwable e) {
            result.put("error", e.toString());
        }
        return result;
    }

    static boolean isSelect(FormEntryPrompt prompt) {
        int control = prompt.getControlType();
        return control == Constants.CONTROL_SELECT_ONE || control == Constants.CONTROL_SELECT_MULTI;
    }

    /** The answer as Collect's widget would give it; null when a select does not offer it. */
    static IAnswerData answer(FormEntryPrompt prompt, String value) {
        if (!isSelect(prompt)) {
            IAnswerData template =
                AnswerDataFactory.template(prompt.getControlType(), prompt.getDataType());
            return template.cast(new UncastData(value));
        }
        List<Selection> picked = new ArrayList<>();
        for (String name : value.trim().split("\\s+")) {
            Selection found = null;
            for (SelectChoice choice : prompt.getSelectChoices()) {
                if (choice.getValue().equals(name)) {
                    found = choice.selection();
                }
            }
            if (found == null) {
                return null;
            }
            picked.add(found);
        }
        if (prompt.getControlType() == Constants.CONTROL_SELECT_ONE) {
            return picked.size() == 1 ? new SelectOneData(picked.get(0)) : null;
        }
        return new SelectMultiData(picked);
    }
}
